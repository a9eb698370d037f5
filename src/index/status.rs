//! The status the index computes for each IapPolicy and OAuthClient, and its CRD shape.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;

use super::{Kind, ObjectKey};
use crate::api::{DiscoveredEndpoints, IapPolicyStatus, OAuthClientStatus};
use crate::error_codes::ErrorCode;

/// A problem found while translating one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Machine-readable reason, the condition's `reason`.
    pub reason: &'static str,
    pub code: Option<ErrorCode>,
    /// What is wrong, naming the objects involved; never a secret value.
    pub detail: String,
}

impl Problem {
    pub fn new(reason: &'static str, code: Option<ErrorCode>, detail: impl Into<String>) -> Self {
        Problem {
            reason,
            code,
            detail: detail.into(),
        }
    }

    /// `Error code N: <title> <detail>` when a code applies, else the detail alone.
    pub fn message(&self) -> String {
        match self.code {
            Some(code) => format!("{} {}", code.headline(), self.detail),
            None => self.detail.clone(),
        }
    }
}

/// The computed status of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputedStatus {
    pub kind: Kind,
    #[serde(flatten)]
    pub key: ObjectKey,
    pub ready: bool,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_sha256: Option<String>,
    /// An OAuthClient's endpoints as its issuer's discovery names them (found at the provider,
    /// folded in after the build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Box<DiscoveredEndpoints>>,
    /// The Gateway API part, as JSON without condition times: a GatewayClass's, Gateway's or
    /// HTTPRoute's whole status (an HTTPRoute's only kube-iap's `parents`), an IapPolicy's
    /// `ancestors`. Text, so that it compares and hashes as what would be written.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_api_status"
    )]
    pub api_status: Option<std::sync::Arc<str>>,
    /// The object's `metadata.uid`, for Events about it.
    #[serde(skip)]
    pub uid: Option<String>,
    /// What the object's status subresource says now (in a cluster), so the status writer
    /// patches only what differs. Boxed: most statuses are computed before it is known, and
    /// 10,000 empty slots of its size were megabytes.
    #[serde(skip)]
    pub current: Option<Box<CurrentStatus>>,
}

/// What a status subresource shows, transition time aside: the terms in which a computed
/// status and an object's present status are compared.
#[derive(PartialEq, Hash)]
struct Shown<'a> {
    ready: Option<bool>,
    reason: &'a str,
    message: &'a str,
    error_code: Option<u32>,
    observed_generation: Option<i64>,
    client_secret_sha256: Option<&'a str>,
    discovered: Option<&'a DiscoveredEndpoints>,
    api_status: Option<&'a str>,
}

/// The status an object carries now, in the terms the status writer compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentStatus {
    pub ready: Option<bool>,
    pub reason: String,
    pub message: String,
    pub error_code: Option<u32>,
    pub observed_generation: Option<i64>,
    pub client_secret_sha256: Option<String>,
    pub last_transition_time: Option<Time>,
    pub discovered: Option<DiscoveredEndpoints>,
    /// An Ingress's `status.loadBalancer` addresses (IPs and hostnames).
    pub load_balancer: Vec<String>,
    /// The Gateway API part, in [`ComputedStatus::api_status`]'s terms. Shared, as text: a
    /// build copies every object's current status, and 10,000 route statuses as JSON trees
    /// were both slow to copy and most of the controller's memory.
    pub api_status: Option<Arc<str>>,
    /// The same as the object carries it, condition times included.
    pub api_status_with_times: Option<Arc<str>>,
}

/// The Gateway API part of an object's present status, as the index keeps it: only the two
/// texts, not a whole [`CurrentStatus`] (at 10,000 routes its empty fields alone were
/// megabytes).
#[derive(Clone)]
pub struct ShownApiStatus {
    api_status: Option<Arc<str>>,
    api_status_with_times: Option<Arc<str>>,
}

impl From<CurrentStatus> for ShownApiStatus {
    fn from(current: CurrentStatus) -> Self {
        ShownApiStatus {
            api_status: current.api_status,
            api_status_with_times: current.api_status_with_times,
        }
    }
}

impl From<&ShownApiStatus> for CurrentStatus {
    fn from(shown: &ShownApiStatus) -> Self {
        CurrentStatus {
            api_status: shown.api_status.clone(),
            api_status_with_times: shown.api_status_with_times.clone(),
            ..CurrentStatus::from_parts(&[], None, None, None)
        }
    }
}

impl CurrentStatus {
    fn from_parts(
        conditions: &[Condition],
        error_code: Option<u32>,
        observed_generation: Option<i64>,
        client_secret_sha256: Option<String>,
    ) -> Self {
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        CurrentStatus {
            ready: ready.map(|c| c.status == "True"),
            reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            error_code,
            observed_generation,
            client_secret_sha256,
            last_transition_time: ready.map(|c| c.last_transition_time.clone()),
            discovered: None,
            load_balancer: Vec::new(),
            api_status: None,
            api_status_with_times: None,
        }
    }

    pub fn of_policy(status: &IapPolicyStatus) -> Self {
        // In the shape of `ComputedStatus::api_status`: `{"ancestors": [...]}`.
        let ancestors = (!status.ancestors.is_empty())
            .then(|| serde_json::json!({ "ancestors": status.ancestors }));
        let stripped = ancestors.clone().map(|mut value| {
            without_times(&mut value);
            Arc::from(value.to_string())
        });
        CurrentStatus {
            api_status: stripped,
            api_status_with_times: ancestors.map(|value| Arc::from(value.to_string())),
            ..Self::from_parts(
                &status.conditions,
                status.error_code,
                status.observed_generation,
                None,
            )
        }
    }

    /// A Gateway API object's status; for a route only the parents kube-iap reports on.
    /// A route's status with its times is not kept: the writer reads the route before writing
    /// it anyway (its `parents` are shared), and 10,000 copies cost megabytes.
    pub fn of_gateway_api(kind: Kind, status: &serde_json::Value) -> Self {
        let mut value = ours_only(kind, status);
        let with_times = (!kind.is_gateway_route()).then(|| Arc::from(value.to_string()));
        without_times(&mut value);
        CurrentStatus {
            api_status: Some(Arc::from(value.to_string())),
            api_status_with_times: with_times,
            ..Self::from_parts(&[], None, None, None)
        }
    }

    fn shown(&self) -> Shown<'_> {
        Shown {
            ready: self.ready,
            reason: &self.reason,
            message: &self.message,
            error_code: self.error_code,
            observed_generation: self.observed_generation,
            client_secret_sha256: self.client_secret_sha256.as_deref(),
            discovered: self.discovered.as_ref(),
            api_status: self.api_status.as_deref(),
        }
    }

    pub fn of_ingress(status: &IngressStatus) -> Self {
        let addresses = status
            .load_balancer
            .as_ref()
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
            .collect();
        CurrentStatus {
            load_balancer: addresses,
            ..Self::from_parts(&[], None, None, None)
        }
    }

    pub fn of_client(status: &OAuthClientStatus) -> Self {
        CurrentStatus {
            discovered: status.discovered.clone(),
            ..Self::from_parts(
                &status.conditions,
                status.error_code,
                status.observed_generation,
                status.client_secret_sha256.clone(),
            )
        }
    }
}

impl ComputedStatus {
    /// Status from the problems found: the first problem with a code decides the code, the first
    /// problem the reason; every problem is in the message.
    pub fn from_problems(
        kind: Kind,
        key: ObjectKey,
        generation: Option<i64>,
        problems: &[Problem],
        healthy_message: String,
    ) -> Self {
        let code = problems.iter().find_map(|problem| problem.code);
        let (ready, reason, message) = match problems {
            [] => (true, "Ready".to_string(), healthy_message),
            _ => {
                // The coded problem leads so the message starts with `Error code N:`.
                let mut ordered: Vec<&Problem> =
                    problems.iter().filter(|p| p.code.is_some()).collect();
                ordered.extend(problems.iter().filter(|p| p.code.is_none()));
                let message = ordered
                    .iter()
                    .map(|p| p.message())
                    .collect::<Vec<_>>()
                    .join("; ");
                (false, ordered[0].reason.to_string(), message)
            }
        };
        ComputedStatus {
            kind,
            key,
            ready,
            reason,
            message,
            error_code: code.map(ErrorCode::number),
            observed_generation: generation,
            client_secret_sha256: None,
            discovered: None,
            api_status: None,
            uid: None,
            current: None,
        }
    }

    /// This status with a problem found outside the index (at the identity provider) folded in.
    /// An object that is already not ready keeps its own, earlier problem.
    pub fn with_problem(&self, problem: &Problem) -> ComputedStatus {
        if !self.ready {
            return self.clone();
        }
        ComputedStatus {
            ready: false,
            reason: problem.reason.to_string(),
            message: problem.message(),
            error_code: problem.code.map(ErrorCode::number),
            ..self.clone()
        }
    }

    fn shown(&self) -> Shown<'_> {
        Shown {
            ready: Some(self.ready),
            reason: &self.reason,
            message: &self.message,
            error_code: self.error_code,
            observed_generation: self.observed_generation,
            client_secret_sha256: self.client_secret_sha256.as_deref(),
            discovered: self.discovered.as_deref(),
            api_status: self.api_status.as_deref(),
        }
    }

    /// Whether the object's status already says exactly this (transition time aside).
    pub fn is_current(&self) -> bool {
        self.current.as_ref().is_some_and(|current| {
            if Kind::GATEWAY_API.contains(&self.kind) {
                // Their status is the Gateway API part alone: no Ready condition, no code.
                current.api_status.as_deref() == self.api_status.as_deref()
            } else {
                current.shown() == self.shown()
            }
        })
    }

    /// A digest of what the status shows (transition time aside) and of the object it is for:
    /// equal for statuses that would write the same thing, so a writer can remember what it
    /// sent without keeping a copy of every status.
    pub fn shown_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.uid.hash(&mut hasher);
        self.shown().hash(&mut hasher);
        hasher.finish()
    }

    /// The condition's transition time: kept from the object while Ready has not flipped.
    pub fn transition_time(&self, now: Time) -> Time {
        match self.current.as_deref() {
            Some(CurrentStatus {
                ready: Some(ready),
                last_transition_time: Some(time),
                ..
            }) if *ready == self.ready => time.clone(),
            _ => now,
        }
    }

    fn ready_condition(&self, now: Time) -> Condition {
        Condition {
            type_: "Ready".to_string(),
            status: if self.ready { "True" } else { "False" }.to_string(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation: self.observed_generation,
            last_transition_time: self.transition_time(now),
        }
    }

    /// The CRD status of an IapPolicy. `now` becomes the condition's transition time; the status
    /// writer keeps the old time when nothing changed.
    pub fn to_policy_status(&self, now: Time) -> IapPolicyStatus {
        let ancestors = self
            .api_status_body(&now)
            .and_then(|mut value| serde_json::from_value(value["ancestors"].take()).ok())
            .unwrap_or_default();
        IapPolicyStatus {
            conditions: vec![self.ready_condition(now)],
            error_code: self.error_code,
            observed_generation: self.observed_generation,
            ancestors,
        }
    }

    /// The status subresource as it is written, for any kind.
    pub fn subresource(&self, now: Time) -> serde_json::Value {
        let value = match self.kind {
            Kind::OAuthClient => serde_json::to_value(self.to_client_status(now)),
            Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute | Kind::GrpcRoute => {
                return self.api_status_body(&now).unwrap_or_default();
            }
            _ => serde_json::to_value(self.to_policy_status(now)),
        };
        value.expect("statuses serialize to JSON")
    }

    /// The Gateway API part as it is written: each condition keeps the transition time the
    /// object shows for it while its status is unchanged, else gets `now`.
    pub fn api_status_body(&self, now: &Time) -> Option<serde_json::Value> {
        let current = self
            .current
            .as_ref()
            .and_then(|current| current.api_status_with_times.as_deref())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        self.api_status_body_against(now, current.as_ref())
    }

    /// [`Self::api_status_body`], the times taken from `shown`: the object's status as just
    /// read (a route's, whose own parents are picked out of it).
    pub fn api_status_body_against(
        &self,
        now: &Time,
        shown: Option<&serde_json::Value>,
    ) -> Option<serde_json::Value> {
        let mut body: serde_json::Value = serde_json::from_str(self.api_status.as_deref()?).ok()?;
        let mut times = std::collections::HashMap::new();
        if let Some(shown) = shown {
            collect_times(&ours_only(self.kind, shown), String::new(), &mut times);
        }
        let now = serde_json::to_value(now).expect("a time serializes");
        fill_times(&mut body, String::new(), &times, &now);
        Some(body)
    }

    /// The CRD status of an OAuthClient.
    pub fn to_client_status(&self, now: Time) -> OAuthClientStatus {
        OAuthClientStatus {
            conditions: vec![self.ready_condition(now)],
            error_code: self.error_code,
            observed_generation: self.observed_generation,
            client_secret_sha256: self.client_secret_sha256.clone(),
            discovered: self.discovered.as_deref().cloned(),
        }
    }
}

/// A status with, for a route, only the parents kube-iap reports on (its `parents` list is
/// shared with other controllers).
fn ours_only(kind: Kind, status: &serde_json::Value) -> serde_json::Value {
    if !kind.is_gateway_route() {
        return status.clone();
    }
    let ours: Vec<serde_json::Value> = status["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|parent| parent["controllerName"] == crate::api::gateway::GATEWAY_CONTROLLER)
        .cloned()
        .collect();
    serde_json::json!({ "parents": ours })
}

/// Removes every condition's `lastTransitionTime`, so statuses compare on what they say.
pub fn without_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("lastTransitionTime");
            map.values_mut().for_each(without_times);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_times),
        _ => {}
    }
}

/// Where a condition sits, told by the names of what encloses it (listener names, parent and
/// ancestor references), never by list positions, which move.
fn child_location(location: &str, key: &str, item: &serde_json::Value) -> String {
    let identity = ["name", "parentRef", "ancestorRef"]
        .iter()
        .find_map(|field| item.get(*field))
        .map(|value| value.to_string())
        .unwrap_or_default();
    format!("{location}/{key}[{identity}]")
}

type Times = std::collections::HashMap<(String, String, String), serde_json::Value>;

fn collect_times(value: &serde_json::Value, location: String, times: &mut Times) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (key, child) in map {
        let serde_json::Value::Array(items) = child else {
            collect_times(child, format!("{location}/{key}"), times);
            continue;
        };
        for item in items {
            if key == "conditions" {
                if let Some(time) = item.get("lastTransitionTime") {
                    let id = (
                        location.clone(),
                        item["type"].to_string(),
                        item["status"].to_string(),
                    );
                    times.insert(id, time.clone());
                }
            } else {
                collect_times(item, child_location(&location, key, item), times);
            }
        }
    }
}

fn fill_times(
    value: &mut serde_json::Value,
    location: String,
    times: &Times,
    now: &serde_json::Value,
) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (key, child) in map.iter_mut() {
        if let serde_json::Value::Array(items) = child {
            for item in items.iter_mut() {
                if key == "conditions" {
                    let id = (
                        location.clone(),
                        item["type"].to_string(),
                        item["status"].to_string(),
                    );
                    item["lastTransitionTime"] = times.get(&id).unwrap_or(now).clone();
                } else {
                    let at = child_location(&location, key, item);
                    fill_times(item, at, times, now);
                }
            }
        } else {
            fill_times(child, format!("{location}/{key}"), times, now);
        }
    }
}

/// Shows the Gateway API part as the JSON it is, not as a string of JSON.
fn serialize_api_status<S: serde::Serializer>(
    text: &Option<std::sync::Arc<str>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let value: Option<serde_json::Value> = text
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    value.serialize(serializer)
}
