//! Gateways of kube-iap's classes: which listeners can be served, and what their status says.
//!
//! kube-iap serves every Gateway of its classes from its own two sockets, so a listener is
//! served only on the port kube-iap's Service exposes for its protocol (HTTP or HTTPS).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rustls::sign::CertifiedKey;

use super::conditions::Cond;
use super::routes::RouteKind;
use super::{GatewaySettings, hostname_is_valid};
use crate::api::gateway::{GATEWAY_GROUP, Gateway, Listener, RouteGroupKind};
use crate::index::{Index, ObjectKey};

/// Which namespaces may attach routes to a listener.
#[derive(Clone, Debug, PartialEq)]
pub enum AllowedNamespaces {
    Same,
    All,
    /// Namespaces whose labels the selector selects; none when the selector is missing.
    Selector(Option<LabelSelector>),
}

/// One listener of a Gateway, as it is served.
pub struct ServedListener {
    pub name: String,
    /// Lower case; `None` for every host.
    pub hostname: Option<String>,
    pub port: i32,
    pub tls: bool,
    pub namespaces: AllowedNamespaces,
    /// Accepted and not conflicted: routes attach to it (and count in `attachedRoutes`).
    pub accepted: bool,
    /// Also every reference resolved: it is served, and its routes get traffic.
    pub ready: bool,
    pub certificate: Option<Arc<CertifiedKey>>,
    pub conditions: Vec<Cond>,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: usize,
}

/// A Gateway of one of kube-iap's classes and its listeners.
pub struct ServedGateway {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub listeners: Vec<ServedListener>,
    /// The Gateway asks for addresses of its own (`spec.addresses`), which kube-iap cannot
    /// give: it is not served at all.
    pub requests_addresses: bool,
}

impl ServedGateway {
    pub fn listener(&self, name: &str) -> Option<&ServedListener> {
        self.listeners.iter().find(|listener| listener.name == name)
    }
}

pub fn evaluate(
    index: &Index,
    key: &ObjectKey,
    gateway: &Gateway,
    settings: &GatewaySettings,
) -> ServedGateway {
    let listeners = &gateway.spec.listeners;
    let requests_addresses = !gateway.spec.addresses.is_empty();
    let mut served: Vec<ServedListener> = listeners
        .iter()
        .map(|listener| evaluate_listener(index, key, listener, listeners, settings))
        .collect();
    if requests_addresses {
        for listener in &mut served {
            listener.accepted = false;
            listener.ready = false;
        }
    }
    ServedGateway {
        key: key.clone(),
        generation: gateway.metadata.generation,
        listeners: served,
        requests_addresses,
    }
}

/// kube-iap serves every Gateway of its classes on the same two sockets, so two Gateways'
/// listeners on one port with one hostname would take the same requests. The oldest Gateway
/// keeps such a listener; a newer one's is `Conflicted` (`HostnameConflict`) and not served, as
/// a listener clashing within its own Gateway is. `gateways` must be oldest first.
pub fn report_conflicts_between(gateways: &mut [ServedGateway]) {
    let mut claimed: foldhash::HashMap<(i32, Option<String>), ObjectKey> = Default::default();
    for gateway in gateways.iter_mut() {
        let mut claims = Vec::new();
        for listener in &mut gateway.listeners {
            if !listener.accepted {
                continue;
            }
            let claim = (listener.port, listener.hostname.clone());
            let Some(holder) = claimed.get(&claim) else {
                claims.push(claim);
                continue;
            };
            let message = format!(
                "Gateway {holder} already has a listener on port {} for {}; kube-iap serves \
                 every Gateway on the same addresses, so the older Gateway's listener is served.",
                listener.port,
                listener.hostname.as_deref().unwrap_or("every hostname"),
            );
            listener.accepted = false;
            listener.ready = false;
            for condition in &mut listener.conditions {
                match condition.type_ {
                    "Conflicted" => {
                        *condition = Cond::yes("Conflicted", "HostnameConflict", &message)
                    }
                    "Programmed" => {
                        *condition = Cond::no(
                            "Programmed",
                            "Invalid",
                            "Not served; the other conditions say why.",
                        )
                    }
                    _ => {}
                }
            }
        }
        for claim in claims {
            claimed.insert(claim, gateway.key.clone());
        }
    }
}

fn evaluate_listener(
    index: &Index,
    gateway: &ObjectKey,
    listener: &Listener,
    all: &[Listener],
    settings: &GatewaySettings,
) -> ServedListener {
    let mut accepted: Option<Cond> = None;
    let mut resolved: Option<Cond> = None;
    let tls = listener.protocol == "HTTPS";
    let hostname = listener.hostname.as_ref().map(|h| h.to_ascii_lowercase());
    let wanted_port = if tls {
        settings.https_port
    } else {
        settings.http_port
    };
    if listener.protocol != "HTTP" && !tls {
        accepted = Some(Cond::no(
            "Accepted",
            "UnsupportedProtocol",
            format!(
                "Protocol {} is not served: kube-iap serves HTTP and HTTPS listeners.",
                listener.protocol
            ),
        ));
    } else if listener.port != wanted_port {
        accepted = Some(Cond::no(
            "Accepted",
            "PortUnavailable",
            format!(
                "kube-iap serves {} on port {wanted_port} (its Service's port), not {}.",
                listener.protocol, listener.port
            ),
        ));
    } else if let Some(hostname) = hostname.as_deref().filter(|h| !hostname_is_valid(h)) {
        accepted = Some(Cond::no(
            "Accepted",
            "UnsupportedValue",
            format!("Hostname {hostname:?} is not a DNS name or a wildcard (*.example.com)."),
        ));
    }

    let mut supported_kinds = Vec::new();
    let mut kinds_valid = true;
    match listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
    {
        None => supported_kinds.extend(RouteKind::ALL.map(route_group_kind)),
        Some(kinds) => {
            for kind in kinds {
                let group = kind.group.as_deref().unwrap_or(GATEWAY_GROUP);
                match RouteKind::ALL
                    .into_iter()
                    .find(|served| served.name() == kind.kind)
                {
                    Some(served) if group == GATEWAY_GROUP => {
                        supported_kinds.push(route_group_kind(served))
                    }
                    _ => kinds_valid = false,
                }
            }
        }
    }
    if !kinds_valid {
        resolved = Some(Cond::no(
            "ResolvedRefs",
            "InvalidRouteKinds",
            "allowedRoutes.kinds names a kind kube-iap does not serve (it serves HTTPRoute and GRPCRoute).",
        ));
    }

    let mut certificate = None;
    if tls && accepted.is_none() {
        match certificate_of(index, gateway, listener) {
            Ok(key) => certificate = Some(key),
            Err((reason, message)) => {
                resolved.get_or_insert(Cond::no("ResolvedRefs", reason, message));
            }
        }
    }

    let conflict = all.iter().find_map(|other| {
        // A listener of a protocol kube-iap does not serve holds no port.
        let served = |l: &Listener| l.protocol == "HTTP" || l.protocol == "HTTPS";
        if std::ptr::eq(other, listener) || other.port != listener.port || !served(other) {
            return None;
        }
        if other.protocol != listener.protocol {
            return Some(Cond::yes(
                "Conflicted",
                "ProtocolConflict",
                format!(
                    "Listener {} uses port {} with protocol {}.",
                    other.name, other.port, other.protocol
                ),
            ));
        }
        let other_host = other.hostname.as_ref().map(|h| h.to_ascii_lowercase());
        (other_host == hostname).then(|| {
            Cond::yes(
                "Conflicted",
                "HostnameConflict",
                format!("Listener {} has the same port and hostname.", other.name),
            )
        })
    });

    let from = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let namespaces = match from.and_then(|n| n.from.as_deref()) {
        None | Some("Same") => AllowedNamespaces::Same,
        Some("All") => AllowedNamespaces::All,
        // `Selector`, or a value this version does not know: only what the selector selects.
        Some(_) => AllowedNamespaces::Selector(from.and_then(|n| n.selector.clone())),
    };

    let attachable = accepted.is_none() && conflict.is_none();
    let ready = attachable && resolved.is_none();
    let programmed = if ready {
        Cond::yes("Programmed", "Programmed", "Served by kube-iap.")
    } else {
        Cond::no(
            "Programmed",
            "Invalid",
            "Not served; the other conditions say why.",
        )
    };
    let conditions = vec![
        accepted.unwrap_or_else(|| Cond::yes("Accepted", "Accepted", "Listener accepted.")),
        programmed,
        resolved
            .unwrap_or_else(|| Cond::yes("ResolvedRefs", "ResolvedRefs", "References resolved.")),
        conflict.unwrap_or_else(|| Cond::no("Conflicted", "NoConflicts", "No conflicts.")),
    ];
    ServedListener {
        name: listener.name.clone(),
        hostname,
        port: listener.port,
        tls,
        namespaces,
        accepted: attachable,
        ready,
        certificate,
        conditions,
        supported_kinds,
        attached_routes: 0,
    }
}

fn route_group_kind(kind: RouteKind) -> RouteGroupKind {
    RouteGroupKind {
        group: Some(GATEWAY_GROUP.to_string()),
        kind: kind.name().to_string(),
    }
}

impl ServedListener {
    /// Whether routes of `kind` may attach (`allowedRoutes.kinds`).
    pub fn allows(&self, kind: RouteKind) -> bool {
        self.supported_kinds
            .iter()
            .any(|supported| supported.kind == kind.name())
    }
}

/// The certificate of an HTTPS listener: its first `certificateRefs` entry, a
/// `kubernetes.io/tls` Secret in the Gateway's namespace.
fn certificate_of(
    index: &Index,
    gateway: &ObjectKey,
    listener: &Listener,
) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    const INVALID: &str = "InvalidCertificateRef";
    let missing = || {
        (
            INVALID,
            "An HTTPS listener needs tls.certificateRefs.".to_string(),
        )
    };
    let tls = listener.tls.as_ref().ok_or_else(missing)?;
    if tls.mode.as_deref().is_some_and(|mode| mode != "Terminate") {
        return Err((INVALID, "Only tls.mode Terminate is served.".to_string()));
    }
    let reference = tls.certificate_refs.first().ok_or_else(missing)?;
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            INVALID,
            format!("certificateRefs names a {kind} of group {group:?}; only Secrets are served."),
        ));
    }
    let namespace = reference.namespace.as_deref().unwrap_or(&gateway.namespace);
    let key = ObjectKey::new(namespace, &reference.name);
    if namespace != gateway.namespace
        && !super::reference_granted(index, "Gateway", &gateway.namespace, "Secret", &key)
    {
        return Err((
            "RefNotPermitted",
            format!("Secret {key} is in another namespace, and no ReferenceGrant there allows it."),
        ));
    }
    crate::index::tls::certified_key(&key.to_string(), index.secret(&key))
        .map_err(|error| (INVALID, format!("{error}.")))
}
