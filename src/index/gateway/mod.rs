//! The Gateway API, translated: GatewayClasses of kube-iap's controller, their Gateways and the
//! HTTPRoutes attached to them become table entries (each protected by the IapPolicy attached
//! most specifically, or refused when none is), plus the spec's statuses for each object and
//! the `ancestors` of each attached policy.

mod conditions;
mod filters;
mod listeners;
mod reuse;
mod routes;
mod selector;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use foldhash::HashMap;
use serde_json::{Value, json};

use self::conditions::Cond;
use self::listeners::ServedGateway;
pub use self::reuse::TranslatedRules;
pub use self::routes::RouteEntry;
use super::status::ComputedStatus;
use super::{Index, Kind, ObjectKey};
use crate::api::IapPolicy;
use crate::api::gateway::{GATEWAY_CONTROLLER, GATEWAY_GROUP};

/// Where kube-iap serves Gateway listeners: the ports its Service exposes (a listener on any
/// other port is not served), and the addresses Gateways report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The port kube-iap's Service exposes for plain HTTP (80 unless set).
    pub http_port: i32,
    pub https_port: i32,
    pub addresses: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            http_port: 80,
            https_port: 443,
            addresses: Vec::new(),
        }
    }
}

/// What the Gateway API objects add to a build.
#[derive(Default)]
pub struct Attachments {
    /// Table entries, each with the policy that protects it.
    pub entries: Vec<RouteEntry>,
    pub statuses: Vec<ComputedStatus>,
    /// Each attached policy's `{"ancestors": [...]}`, without times.
    pub ancestors: HashMap<ObjectKey, Value>,
    /// Certificates of HTTPS listeners, by hostname (`*` for a listener without one).
    pub certificates: Vec<(String, Arc<rustls::sign::CertifiedKey>)>,
}

/// Whether `hostname` is a DNS name or a wildcard `*.name`, in lower case.
pub(super) fn hostname_is_valid(hostname: &str) -> bool {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Whether a ReferenceGrant in `to.namespace` lets a `from_kind` (of the Gateway API group) in
/// `from_namespace` refer to the object `to` of `to_kind` in the core group (a Service, a
/// Secret).
pub(super) fn reference_granted(
    index: &Index,
    from_kind: &str,
    from_namespace: &str,
    to_kind: &str,
    to: &ObjectKey,
) -> bool {
    index
        .reference_grants
        .iter()
        .filter(|(key, _)| key.namespace == to.namespace)
        .any(|(_, grant)| {
            let from = grant.spec.from.iter().any(|from| {
                from.group == GATEWAY_GROUP
                    && from.kind == from_kind
                    && from.namespace == from_namespace
            });
            let target = grant.spec.to.iter().any(|target| {
                target.group.is_empty()
                    && target.kind == to_kind
                    && target.name.as_deref().is_none_or(|name| name == to.name)
            });
            from && target
        })
}

pub fn attach(index: &Index, policies_oldest_first: &[(&ObjectKey, &IapPolicy)]) -> Attachments {
    let mut attachments = Attachments::default();
    let settings = &index.gateway_settings;
    let mut ours = foldhash::HashSet::default();
    for (key, class) in &index.gateway_classes {
        if class.spec.controller_name != GATEWAY_CONTROLLER {
            continue;
        }
        ours.insert(key.name.as_str());
        let accepted = [Cond::yes("Accepted", "Accepted", "Served by kube-iap.")];
        attachments.statuses.push(status(
            Kind::GatewayClass,
            key,
            class.metadata.generation,
            &accepted,
            json!({"conditions": conditions::to_json(&accepted, class.metadata.generation)}),
        ));
    }
    let mut gateways: Vec<ServedGateway> = index
        .gateways
        .iter()
        .filter(|(_, gateway)| ours.contains(gateway.spec.gateway_class_name.as_str()))
        .map(|(key, gateway)| listeners::evaluate(index, key, gateway, settings))
        .collect();

    // Routes oldest first, then by name: the spec's tie-break between equally specific rules.
    let mut routes: Vec<_> = index.http_routes.iter().collect();
    routes.sort_by(|(a_key, a), (b_key, b)| {
        let age = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            let created = meta.creation_timestamp.as_ref().map(|time| time.0);
            (created.is_none(), created)
        };
        age(&a.metadata)
            .cmp(&age(&b.metadata))
            .then_with(|| a_key.cmp(b_key))
    });
    let targets = policy_targets(policies_oldest_first);
    let mut entries = Vec::new();
    let mut rank_base = 0u64;
    let mut attached_routes: foldhash::HashSet<ObjectKey> = Default::default();
    let mut last_rules = index.gateway_rules.take();
    let mut rules_now = reuse::RuleMap::default();
    for (key, route) in routes {
        let rules = reuse::rules_of(index, &mut last_rules, &mut rules_now, key, route);
        let outcomes = routes::attach(
            index,
            key,
            route,
            &rules,
            &mut gateways,
            rank_base,
            &mut entries,
        );
        // Room for every match of every rule: at most 16 rules of 64 matches each.
        rank_base += 1 + 16 * 64;
        if outcomes.is_empty() {
            continue;
        }
        let mut parents = Vec::new();
        let mut summary: Vec<Cond> = Vec::new();
        for outcome in outcomes {
            if outcome.accepted.holds {
                attached_routes.insert(key.clone());
            }
            let mut unprotected = 0;
            let mut protectors: Vec<ObjectKey> = Vec::new();
            for entry in &mut entries[outcome.entries.clone()] {
                let policy = protector(&targets, entry).cloned();
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
                Some(Cond::yes(
                    "kube-iap.io/Protected",
                    "Protected",
                    format!(
                        "Protected by IapPolicy {}.",
                        protectors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            };
            let mut conds = vec![outcome.accepted, outcome.resolved];
            conds.extend(outcome.partially_invalid);
            conds.extend(protected);
            parents.push((outcome.parent_ref, conds.len()));
            summary.extend(conds);
        }
        let generation = route.metadata.generation;
        let mut at = 0;
        let written = RouteStatus {
            parents: parents
                .iter()
                .map(|(parent_ref, count)| {
                    let conditions = &summary[at..at + count];
                    at += count;
                    ParentStatus {
                        conditions: conditions.iter().map(|c| c.written(generation)).collect(),
                        controller_name: GATEWAY_CONTROLLER,
                        parent_ref: WrittenParentRef::of(parent_ref),
                    }
                })
                .collect(),
        };
        let text = serde_json::to_string(&written).expect("a status serializes");
        let problem = conditions::first_problem(&summary)
            .map(|condition| (condition.reason, condition.message.clone()));
        attachments.statuses.push(summarize_text(
            Kind::HttpRoute,
            key,
            generation,
            problem,
            text,
        ));
    }
    index.gateway_rules.put(rules_now);
    attachments.entries = entries;

    for gateway in &gateways {
        for listener in &gateway.listeners {
            if let Some(certificate) = &listener.certificate {
                let name = listener.hostname.clone().unwrap_or_else(|| "*".to_string());
                attachments.certificates.push((name, certificate.clone()));
            }
        }
        attachments
            .statuses
            .push(gateway_status(gateway, &settings.addresses));
    }
    attachments.ancestors = ancestors(index, policies_oldest_first, &gateways, &attached_routes);
    attachments
}

/// The policy for an entry, most specific first: the route's rule (by `sectionName`, or an
/// `ExtensionRef` filter), the route, the Gateway's listener, the Gateway.
fn protector<'a>(targets: &Targets<'a>, entry: &'a RouteEntry) -> Option<&'a ObjectKey> {
    let route = &entry.route;
    let gateway = &entry.gateway;
    let attached = |kind, key: &'a ObjectKey, section: Option<&'a str>| {
        targets
            .get(&(kind, key.namespace.as_str(), key.name.as_str(), section))
            .copied()
    };
    entry
        .rule_name
        .as_deref()
        .and_then(|rule| attached("HTTPRoute", route, Some(rule)))
        .or(entry.extension_policy.as_ref())
        .or_else(|| attached("HTTPRoute", route, None))
        .or_else(|| attached("Gateway", gateway, Some(entry.listener.as_str())))
        .or_else(|| attached("Gateway", gateway, None))
}

/// What each policy's `spec.targetRefs` names, by (kind, namespace, name, sectionName); the
/// oldest policy holds a target another also names. Borrowed, so a lookup allocates nothing.
type Targets<'a> = HashMap<(&'static str, &'a str, &'a str, Option<&'a str>), &'a ObjectKey>;

fn policy_targets<'a>(policies: &[(&'a ObjectKey, &'a IapPolicy)]) -> Targets<'a> {
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
        _ => None,
    }
}

/// Each policy's `ancestors`: for every target, whether the policy took effect there.
fn ancestors(
    index: &Index,
    policies: &[(&ObjectKey, &IapPolicy)],
    gateways: &[ServedGateway],
    attached_routes: &foldhash::HashSet<ObjectKey>,
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
                Some(_) => index.http_routes.get(&named).map(|route| {
                    attached_routes.contains(&named)
                        && section.is_none_or(|section| {
                            route
                                .spec
                                .rules
                                .iter()
                                .any(|rule| rule.name.as_deref() == Some(section))
                        })
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

fn gateway_status(gateway: &ServedGateway, addresses: &[String]) -> ComputedStatus {
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

fn status(
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
fn summarize(
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
    let problems: Vec<super::Problem> = problem
        .into_iter()
        .map(|(reason, message)| super::Problem::new(reason, None, message))
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
