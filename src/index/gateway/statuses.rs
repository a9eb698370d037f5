//! The statuses of the Gateway API objects kube-iap serves, in the spec's shape: computed here
//! without condition times (the status writer adds them), summarized for `/status` and Events.

use std::sync::Arc;

use serde_json::{Value, json};

use super::conditions::{self, Cond};
use super::listeners::ServedGateway;
use crate::api::gateway::{GATEWAY_CONTROLLER, GATEWAY_GROUP};
use crate::index::status::ComputedStatus;
use crate::index::{Kind, ObjectKey};

/// A route's computed status: kube-iap's entries of `status.parents`, as text.
pub(super) fn route_status(
    kind: Kind,
    key: &ObjectKey,
    generation: Option<i64>,
    parents: &[(crate::api::gateway::ParentReference, Vec<Cond>)],
) -> ComputedStatus {
    let written = RouteStatus {
        parents: parents
            .iter()
            .map(|(parent_ref, conditions)| ParentStatus {
                conditions: conditions.iter().map(|c| c.written(generation)).collect(),
                controller_name: GATEWAY_CONTROLLER,
                parent_ref: WrittenParentRef::of(parent_ref),
            })
            .collect(),
    };
    let text = serde_json::to_string(&written).expect("a status serializes");
    let problem = parents
        .iter()
        .find_map(|(_, conditions)| conditions::first_problem(conditions))
        .map(|condition| (condition.reason, condition.message.clone()));
    summarize_text(kind, key, generation, problem, text)
}

pub(super) fn gateway_status(gateway: &ServedGateway, addresses: &[String]) -> ComputedStatus {
    let generation = gateway.generation;
    let any_ready = gateway.listeners.iter().any(|listener| listener.ready);
    let all_ready = gateway.listeners.iter().all(|listener| listener.ready);
    let accepted = if gateway.requests_addresses {
        Cond::no(
            "Accepted",
            "UnsupportedAddress",
            "kube-iap serves every Gateway on its own Service's addresses: remove spec.addresses.",
        )
    } else if all_ready {
        Cond::yes("Accepted", "Accepted", "Served by kube-iap.")
    } else {
        Cond::yes(
            "Accepted",
            "ListenersNotValid",
            "Some listeners are not served; their conditions say why.",
        )
    };
    let programmed = if gateway.requests_addresses {
        Cond::no(
            "Programmed",
            "AddressNotUsable",
            "The requested addresses cannot be used; the Gateway is not served.",
        )
    } else if any_ready {
        Cond::yes("Programmed", "Programmed", "kube-iap serves this Gateway.")
    } else {
        Cond::no("Programmed", "Invalid", "No listener can be served.")
    };
    let gateway_conditions = [accepted, programmed];
    let mut summary: Vec<&Cond> = gateway_conditions.iter().collect();
    let listeners: Vec<Value> = gateway
        .listeners
        .iter()
        .map(|listener| {
            summary.extend(listener.conditions.iter());
            json!({
                "name": listener.name,
                "supportedKinds": listener.supported_kinds,
                "attachedRoutes": listener.attached_routes,
                "conditions": conditions::to_json(&listener.conditions, generation),
            })
        })
        .collect();
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|address| match address.parse::<std::net::IpAddr>() {
            Ok(_) => json!({"type": "IPAddress", "value": address}),
            Err(_) => json!({"type": "Hostname", "value": address}),
        })
        .collect();
    let mut body = json!({
        "conditions": conditions::to_json(&gateway_conditions, generation),
        "listeners": listeners,
    });
    if !addresses.is_empty() {
        body["addresses"] = Value::Array(addresses);
    }
    // A listener that is not programmed says why in its other conditions: report that cause.
    let is_problem = |c: &&&Cond| c.holds == (c.type_ == "Conflicted");
    let problem = summary
        .iter()
        .filter(is_problem)
        .find(|condition| condition.type_ != "Programmed")
        .or_else(|| summary.iter().find(is_problem))
        .map(|condition| (condition.reason, condition.message.clone()));
    summarize(Kind::Gateway, &gateway.key, generation, problem, body)
}

pub(super) fn status(
    kind: Kind,
    key: &ObjectKey,
    generation: Option<i64>,
    conditions: &[Cond],
    body: Value,
) -> ComputedStatus {
    let problem = conditions::first_problem(conditions)
        .map(|condition| (condition.reason, condition.message.clone()));
    summarize(kind, key, generation, problem, body)
}

/// An HTTPRoute's status as kube-iap writes it (only its own parents), fields in alphabetical
/// order like [`conditions::Written`].
#[derive(serde::Serialize)]
struct RouteStatus<'a> {
    parents: Vec<ParentStatus<'a>>,
}

#[derive(serde::Serialize)]
struct ParentStatus<'a> {
    conditions: Vec<conditions::Written<'a>>,
    #[serde(rename = "controllerName")]
    controller_name: &'static str,
    #[serde(rename = "parentRef")]
    parent_ref: WrittenParentRef<'a>,
}

/// A route's `parentRef` with its defaults filled in, fields in alphabetical order.
#[derive(serde::Serialize)]
struct WrittenParentRef<'a> {
    group: &'static str,
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<i32>,
    #[serde(rename = "sectionName", skip_serializing_if = "Option::is_none")]
    section_name: Option<&'a str>,
}

impl<'a> WrittenParentRef<'a> {
    fn of(parent: &'a crate::api::gateway::ParentReference) -> Self {
        WrittenParentRef {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            name: &parent.name,
            namespace: parent.namespace.as_deref(),
            port: parent.port,
            section_name: parent.section_name.as_deref(),
        }
    }
}

/// A computed status whose summary (Ready, reason, message) is the first problem, and whose
/// Gateway API status is `body`.
pub(super) fn summarize(
    kind: Kind,
    key: &ObjectKey,
    generation: Option<i64>,
    problem: Option<(&'static str, String)>,
    body: Value,
) -> ComputedStatus {
    summarize_text(kind, key, generation, problem, body.to_string())
}

/// [`summarize`], the Gateway API status being already text.
fn summarize_text(
    kind: Kind,
    key: &ObjectKey,
    generation: Option<i64>,
    problem: Option<(&'static str, String)>,
    text: String,
) -> ComputedStatus {
    let problems: Vec<crate::index::Problem> = problem
        .into_iter()
        .map(|(reason, message)| crate::index::Problem::new(reason, None, message))
        .collect();
    let mut status = ComputedStatus::from_problems(
        kind,
        key.clone(),
        generation,
        &problems,
        "Served by kube-iap.".to_string(),
    );
    status.api_status = Some(Arc::from(text));
    status
}
