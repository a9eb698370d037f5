//! The Gateway API, translated: GatewayClasses of kube-iap's controller, their Gateways and the
//! HTTPRoutes and GRPCRoutes attached to them become table entries (each protected by the IapPolicy attached
//! most specifically, or refused when none is), plus the spec's statuses for each object and
//! the `ancestors` of each attached policy.

mod attach_routes;
mod attachment;
mod conditions;
mod filters;
mod grpc;
mod listeners;
mod reuse;
mod routes;
mod selector;
mod statuses;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use self::attach_routes::RouteAttachment;
use self::conditions::Cond;
use self::listeners::ServedGateway;
pub use self::reuse::TranslatedRules;
pub use self::routes::{RouteEntries, RouteEntry, TableRoutes};
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

/// The Gateway API features (the conformance suite's names) kube-iap's classes support, in
/// the alphabetical order `status.supportedFeatures` must have (a test keeps it). Each is proven
/// through the proxy by the tests in `tests/integration/gateway.rs` and `grpc.rs`.
pub const SUPPORTED_FEATURES: [&str; 18] = [
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// What the Gateway API objects add to a build.
#[derive(Default)]
pub struct Attachments {
    /// Table entries, each with the policy that protects it, route by route.
    pub entries: Vec<Arc<RouteEntries>>,
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
        let features: Vec<Value> = SUPPORTED_FEATURES
            .iter()
            .map(|name| json!({ "name": name }))
            .collect();
        attachments.statuses.push(statuses::status(
            Kind::GatewayClass,
            key,
            class.metadata.generation,
            &accepted,
            json!({
                "conditions": conditions::to_json(&accepted, class.metadata.generation),
                "supportedFeatures": features,
            }),
        ));
    }
    // Oldest first, then by name: the older Gateway keeps a listener two of them claim.
    let mut ours_oldest_first: Vec<_> = index
        .gateways
        .iter()
        .filter(|(_, gateway)| ours.contains(gateway.spec.gateway_class_name.as_str()))
        .collect();
    ours_oldest_first.sort_by(|(a_key, a), (b_key, b)| {
        oldest_first(&a.metadata, &b.metadata).then_with(|| a_key.cmp(b_key))
    });
    let mut gateways: Vec<ServedGateway> = ours_oldest_first
        .into_iter()
        .map(|(key, gateway)| listeners::evaluate(index, key, gateway, settings))
        .collect();
    listeners::report_conflicts_between(&mut gateways);

    let targets = attachment::policy_targets(policies_oldest_first);
    let attached = {
        let mut routes = RouteAttachment::new(index, &targets, &mut gateways);
        // HTTPRoutes rank before GRPCRoutes: the spec orders routes within a kind only.
        routes.attach_all(&index.http_routes);
        routes.attach_all(&index.grpc_routes);
        routes.finish()
    };
    attachments.statuses.extend(attached.statuses);
    let entries = attached.entries;
    let attached_routes = attached.routes;
    attachments.entries = entries;

    for gateway in &gateways {
        // Only served listeners lend their certificate: a Conflicted one (another Gateway
        // holds its hostname) or one of a Gateway that is not served must not replace it.
        for listener in gateway.listeners.iter().filter(|listener| listener.ready) {
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

/// Creation time order, objects without one last.
pub(super) fn oldest_first(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
    let age = |meta: &ObjectMeta| {
        let created = meta.creation_timestamp.as_ref().map(|time| time.0);
        (created.is_none(), created)
    };
    age(a).cmp(&age(b))
}
