//! The Gateway API, translated: GatewayClasses of kube-iap's controller, their Gateways and the
//! HTTPRoutes attached to them become table entries (each protected by the IapPolicy attached
//! most specifically, or refused when none is), plus the spec's statuses for each object and
//! the `ancestors` of each attached policy.

mod attachment;
mod conditions;
mod filters;
mod listeners;
mod reuse;
mod routes;
mod selector;
mod statuses;

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
    /// The port it exposes for HTTPS (443 unless set).
    pub https_port: i32,
    /// What Gateways show in `status.addresses` (`--ingress-address`).
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

/// Everything the Gateway API objects of `index` add to a build. `policies_oldest_first` decides
/// which of two policies naming the same target holds it.
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
        attachments.statuses.push(statuses::status(
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
    let targets = attachment::policy_targets(policies_oldest_first);
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
        let mut parents = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            if outcome.accepted.holds {
                attached_routes.insert(key.clone());
            }
            let entries = &mut entries[outcome.entries.clone()];
            parents.push(attachment::protect(&targets, entries, outcome));
        }
        attachments.statuses.push(statuses::route_status(
            key,
            route.metadata.generation,
            &parents,
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
            .push(statuses::gateway_status(gateway, &settings.addresses));
    }
    attachments.ancestors =
        attachment::ancestors(index, policies_oldest_first, &gateways, &attached_routes);
    attachments
}
