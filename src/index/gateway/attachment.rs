//! Policy attachment (GEP-713): which IapPolicy protects each route entry, most specific
//! first, and each policy's `status.ancestors`.

use foldhash::HashMap;
use serde_json::{Value, json};

use super::conditions::Cond;
use super::listeners::ServedGateway;
use super::routes::{self, GatewayRoute, RouteEntry, RouteKind};
use crate::api::IapPolicy;
use crate::api::gateway::{GATEWAY_CONTROLLER, GATEWAY_GROUP};
use crate::index::{Index, ObjectKey};

/// Finds the policy of each of a parent's `entries`, and says how the route fared there:
/// `Accepted`, `ResolvedRefs`, `PartiallyInvalid` when some rules are not served, and
/// kube-iap's own `kube-iap.io/Protected` (whether every entry has a policy).
pub(super) fn protect(
    targets: &Targets<'_>,
    entries: &mut [RouteEntry],
    outcome: routes::ParentOutcome,
) -> (crate::api::gateway::ParentReference, Vec<Cond>) {
    let mut unprotected = 0;
    let mut protectors: Vec<ObjectKey> = Vec::new();
    for entry in entries {
        let policy = protector(targets, entry).cloned();
        match &policy {
            // A redirect reaches no backend: nothing to protect.
            None if entry.redirect.is_some() => {}
            Some(policy) if !protectors.contains(policy) => protectors.push(policy.clone()),
            Some(_) => {}
            None => unprotected += 1,
        }
        entry.policy = policy;
    }
    let protected = if !outcome.accepted.holds {
        None
    } else if unprotected > 0 {
        Some(Cond::no(
            "kube-iap.io/Protected",
            "NoPolicy",
            "No IapPolicy attaches to this route, its rules or its Gateway, so kube-iap \
             refuses its requests with 403. Attach one with spec.targetRefs.",
        ))
    } else {
        let names: Vec<String> = protectors.iter().map(ToString::to_string).collect();
        Some(Cond::yes(
            "kube-iap.io/Protected",
            "Protected",
            format!("Protected by IapPolicy {}.", names.join(", ")),
        ))
    };
    let mut conditions = vec![outcome.accepted, outcome.resolved];
    conditions.extend(outcome.partially_invalid);
    conditions.extend(protected);
    (outcome.parent_ref, conditions)
}

/// The policy for an entry, most specific first: the route's rule (by `sectionName`, or an
/// `ExtensionRef` filter), the route, the Gateway's listener, the Gateway.
pub(super) fn protector<'a>(targets: &Targets<'a>, entry: &'a RouteEntry) -> Option<&'a ObjectKey> {
    let route = &entry.route;
    let gateway = &entry.gateway;
    let attached = |kind, key: &'a ObjectKey, section: Option<&'a str>| {
        targets
            .get(&(kind, key.namespace.as_str(), key.name.as_str(), section))
            .copied()
    };
    let kind = entry.route_kind.name();
    entry
        .rule_name
        .as_deref()
        .and_then(|rule| attached(kind, route, Some(rule)))
        .or(entry.extension_policy.as_ref())
        .or_else(|| attached(kind, route, None))
        .or_else(|| attached("Gateway", gateway, Some(entry.listener.as_str())))
        .or_else(|| attached("Gateway", gateway, None))
}

/// What each policy's `spec.targetRefs` names, by (kind, namespace, name, sectionName); the
/// oldest policy holds a target another also names. Borrowed, so a lookup allocates nothing.
pub(super) type Targets<'a> =
    HashMap<(&'static str, &'a str, &'a str, Option<&'a str>), &'a ObjectKey>;

pub(super) fn policy_targets<'a>(policies: &[(&'a ObjectKey, &'a IapPolicy)]) -> Targets<'a> {
    let mut targets: Targets<'a> = HashMap::default();
    for &(key, policy) in policies {
        for target in &policy.spec.target_refs {
            let Some(kind) = target_kind(&target.kind) else {
                continue;
            };
            targets
                .entry((
                    kind,
                    key.namespace.as_str(),
                    target.name.as_str(),
                    target.section_name.as_deref(),
                ))
                .or_insert(key);
        }
    }
    targets
}

fn target_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "Gateway" => Some("Gateway"),
        "HTTPRoute" => Some("HTTPRoute"),
        "GRPCRoute" => Some("GRPCRoute"),
        _ => None,
    }
}

/// Each policy's `ancestors`: for every target, whether the policy took effect there.
pub(super) fn ancestors(
    index: &Index,
    policies: &[(&ObjectKey, &IapPolicy)],
    gateways: &[ServedGateway],
    attached_routes: &foldhash::HashSet<(RouteKind, ObjectKey)>,
) -> HashMap<ObjectKey, Value> {
    let targets = policy_targets(policies);
    let mut by_policy = HashMap::default();
    for (key, policy) in policies {
        if policy.spec.target_refs.is_empty() {
            continue;
        }
        let generation = policy.metadata.generation;
        let mut list = Vec::new();
        for target in &policy.spec.target_refs {
            let named = ObjectKey::new(&key.namespace, &target.name);
            let section = target.section_name.as_deref();
            let found = match target_kind(&target.kind) {
                Some("Gateway") => gateways.iter().find(|g| g.key == named).map(|gateway| {
                    section.is_none_or(|section| gateway.listener(section).is_some())
                }),
                Some("HTTPRoute") => index.http_routes.get(&named).map(|route| {
                    attached_routes.contains(&(RouteKind::Http, named.clone()))
                        && section.is_none_or(|section| route.has_rule(section))
                }),
                Some(_) => index.grpc_routes.get(&named).map(|route| {
                    attached_routes.contains(&(RouteKind::Grpc, named.clone()))
                        && section.is_none_or(|section| route.has_rule(section))
                }),
                None => None,
            };
            let holder = target_kind(&target.kind).and_then(|kind| {
                targets
                    .get(&(kind, key.namespace.as_str(), target.name.as_str(), section))
                    .copied()
            });
            let condition = match (found, holder) {
                (Some(true), Some(holder)) if holder == *key => {
                    Cond::yes("Accepted", "Accepted", "The policy protects this target.")
                }
                (Some(true), Some(holder)) => Cond::no(
                    "Accepted",
                    "Conflicted",
                    format!("The older IapPolicy {holder} already attaches to this target."),
                ),
                _ => Cond::no(
                    "Accepted",
                    "TargetNotFound",
                    format!(
                        "No {} {named}{} of a kube-iap Gateway class.",
                        target.kind,
                        section.map(|s| format!(" section {s}")).unwrap_or_default()
                    ),
                ),
            };
            let mut ancestor_ref = json!({
                "group": GATEWAY_GROUP,
                "kind": target.kind,
                "name": target.name,
                "namespace": key.namespace,
            });
            if let Some(section) = section {
                ancestor_ref["sectionName"] = json!(section);
            }
            list.push(json!({
                "ancestorRef": ancestor_ref,
                "controllerName": GATEWAY_CONTROLLER,
                "conditions": [condition.to_json(generation)],
            }));
        }
        by_policy.insert((*key).clone(), json!({ "ancestors": list }));
    }
    by_policy
}
