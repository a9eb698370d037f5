//! The status the index computes for each IapPolicy and OAuthClient, and its CRD shape.

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
    pub discovered: Option<DiscoveredEndpoints>,
    /// The object's `metadata.uid`, for Events about it.
    #[serde(skip)]
    pub uid: Option<String>,
    /// What the object's status subresource says now (in a cluster), so the status writer
    /// patches only what differs.
    #[serde(skip)]
    pub current: Option<CurrentStatus>,
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
        }
    }

    pub fn of_policy(status: &IapPolicyStatus) -> Self {
        Self::from_parts(
            &status.conditions,
            status.error_code,
            status.observed_generation,
            None,
        )
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
            discovered: self.discovered.as_ref(),
        }
    }

    /// Whether the object's status already says exactly this (transition time aside).
    pub fn is_current(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|current| current.shown() == self.shown())
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
        match &self.current {
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
        IapPolicyStatus {
            conditions: vec![self.ready_condition(now)],
            error_code: self.error_code,
            observed_generation: self.observed_generation,
        }
    }

    /// The CRD status of an OAuthClient.
    pub fn to_client_status(&self, now: Time) -> OAuthClientStatus {
        OAuthClientStatus {
            conditions: vec![self.ready_condition(now)],
            error_code: self.error_code,
            observed_generation: self.observed_generation,
            client_secret_sha256: self.client_secret_sha256.clone(),
            discovered: self.discovered.clone(),
        }
    }
}
