//! Ingresses of the served class, translated into backends of the IapPolicy their
//! `kube-iap.io/policy` annotation names. An Ingress without that annotation, or naming a policy
//! that does not exist, is not served at all: nothing reaches a backend without a policy.

use foldhash::HashMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::backends::PortSelector;
use super::status::{ComputedStatus, Problem};
use super::{Index, Kind, ObjectKey};
use crate::api::POLICY_ANNOTATION;

pub const DEFAULT_INGRESS_CLASS: &str = "kube-iap";
/// The annotation older Ingresses use instead of `spec.ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Whether kube-iap serves this Ingress: its class is ours.
pub fn is_served_class(ingress: &Ingress, class: &str) -> bool {
    let by_field = ingress
        .spec
        .as_ref()
        .and_then(|spec| spec.ingress_class_name.as_deref());
    match by_field {
        Some(name) => name == class,
        None => ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .is_some_and(|name| name == class),
    }
}

/// One host and path of an Ingress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressPath {
    pub ingress: ObjectKey,
    pub host: String,
    /// As written; normalised with the policy's paths.
    pub path: String,
    pub service: ObjectKey,
    pub port: PortSelector,
    /// The `spec.tls` Secret whose hosts include this host.
    pub tls_secret: Option<ObjectKey>,
}

/// The paths of served Ingresses by the policy they name, and a status per served Ingress.
pub fn attach(index: &Index) -> (HashMap<ObjectKey, Vec<IngressPath>>, Vec<ComputedStatus>) {
    let mut by_policy: HashMap<ObjectKey, Vec<IngressPath>> = HashMap::default();
    let mut statuses = Vec::new();
    for (key, ingress) in &index.ingresses {
        if !is_served_class(ingress, index.ingress_class()) {
            continue;
        }
        let mut problems = Vec::new();
        let policy = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_ANNOTATION));
        let policy_key = match policy {
            None => {
                problems.push(Problem::new(
                    "PolicyAnnotationMissing",
                    None,
                    format!(
                        "Not served: name the IapPolicy that protects this Ingress in the {POLICY_ANNOTATION} annotation."
                    ),
                ));
                None
            }
            Some(name) => {
                let policy_key = ObjectKey::new(&key.namespace, name);
                if index.policies.contains_key(&policy_key) {
                    Some(policy_key)
                } else {
                    problems.push(Problem::new(
                        "PolicyNotFound",
                        None,
                        format!("Not served: IapPolicy {policy_key} named by {POLICY_ANNOTATION} does not exist."),
                    ));
                    None
                }
            }
        };
        let paths = ingress_paths(key, ingress, &mut problems);
        let served = paths.len();
        if let Some(policy_key) = &policy_key {
            by_policy
                .entry(policy_key.clone())
                .or_default()
                .extend(paths);
        }
        let healthy = format!(
            "Serving {served} path(s) under IapPolicy {}.",
            policy_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        statuses.push(ComputedStatus::from_problems(
            Kind::Ingress,
            key.clone(),
            ingress.metadata.generation,
            &problems,
            healthy,
        ));
    }
    (by_policy, statuses)
}

fn ingress_paths(
    key: &ObjectKey,
    ingress: &Ingress,
    problems: &mut Vec<Problem>,
) -> Vec<IngressPath> {
    let Some(spec) = &ingress.spec else {
        return Vec::new();
    };
    if spec.default_backend.is_some() {
        problems.push(Problem::new(
            "DefaultBackendIgnored",
            None,
            "spec.defaultBackend is not served: every request needs a host a policy protects.",
        ));
    }
    let tls_secret = |host: &str| {
        spec.tls.iter().flatten().find_map(|tls| {
            let covers = tls
                .hosts
                .as_ref()
                .is_none_or(|hosts| hosts.iter().any(|h| h.eq_ignore_ascii_case(host)));
            match (&tls.secret_name, covers) {
                (Some(name), true) => Some(ObjectKey::new(&key.namespace, name)),
                _ => None,
            }
        })
    };
    let mut paths = Vec::new();
    for rule in spec.rules.iter().flatten() {
        let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) else {
            problems.push(Problem::new(
                "RuleWithoutHost",
                None,
                "A rule without a host is not served: kube-iap routes by host.",
            ));
            continue;
        };
        for path in rule.http.iter().flat_map(|http| &http.paths) {
            match service_backend(&path.backend) {
                Some((service, port)) => paths.push(IngressPath {
                    ingress: key.clone(),
                    host: host.to_string(),
                    // Exact paths are served as prefixes: the policy still decides every request.
                    path: path.path.clone().unwrap_or_else(|| "/".to_string()),
                    service: ObjectKey::new(&key.namespace, service),
                    port,
                    tls_secret: tls_secret(host),
                }),
                None => problems.push(Problem::new(
                    "UnsupportedBackend",
                    None,
                    format!("{host}: only Service backends are served."),
                )),
            }
        }
    }
    paths
}

fn service_backend(backend: &IngressBackend) -> Option<(&str, PortSelector)> {
    let service = backend.service.as_ref()?;
    let port = match &service.port {
        Some(port) => match (port.number, &port.name) {
            (Some(number), _) => PortSelector::Number(u16::try_from(number).ok()?),
            (None, Some(name)) => PortSelector::Name(name.clone()),
            (None, None) => PortSelector::Only,
        },
        None => PortSelector::Only,
    };
    Some((&service.name, port))
}
