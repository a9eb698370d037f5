//! Routes (HTTPRoutes and GRPCRoutes) attached to kube-iap's Gateways: which listeners take
//! them (status per parent), and the table entries their rules become.

use std::sync::Arc;

use http::header::HeaderName;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::conditions::Cond;
use super::listeners::{AllowedNamespaces, ServedGateway};
use crate::api::gateway::{
    GATEWAY_GROUP, GRPCRoute, HTTPRoute, HttpBackendRef, HttpRouteFilter, HttpRouteMatch,
    ParentReference,
};
use crate::index::backends::{
    self, H2C_APP_PROTOCOL, PortSelector, ResolvedBackend, SlicesByService,
};
use crate::index::{Index, Kind, ObjectKey};
use crate::model::{Backend, MatchConditions, Redirect, RouteFilters, path};

/// The kinds of route kube-iap serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Http,
    /// Served over HTTP/2 to backends that speak it in the clear (h2c).
    Grpc,
}

impl RouteKind {
    pub const ALL: [RouteKind; 2] = [RouteKind::Http, RouteKind::Grpc];

    /// The kind's name in the Gateway API.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    pub fn index_kind(self) -> Kind {
        match self {
            RouteKind::Http => Kind::HttpRoute,
            RouteKind::Grpc => Kind::GrpcRoute,
        }
    }
}

/// A route of one of the kinds kube-iap serves: what attaching it reads, and its rules.
pub trait GatewayRoute {
    const KIND: RouteKind;
    fn meta(&self) -> &ObjectMeta;
    fn parents_and_hostnames(&self) -> (&[ParentReference], &[String]);
    /// Each rule's name, backendRefs and filters.
    fn rule_parts(&self) -> Vec<(Option<&str>, &[HttpBackendRef], &[HttpRouteFilter])>;
    fn translate_rules(&self, index: &Index, key: &ObjectKey) -> Vec<Rule>;

    fn view<'a>(&'a self, key: &'a ObjectKey) -> RouteView<'a> {
        let (parent_refs, hostnames) = self.parents_and_hostnames();
        RouteView {
            kind: Self::KIND,
            key,
            parent_refs,
            hostnames,
        }
    }

    /// Whether a rule of this name exists (a policy's `sectionName` may name one).
    fn has_rule(&self, name: &str) -> bool {
        let rules = self.rule_parts();
        rules.iter().any(|(rule, _, _)| *rule == Some(name))
    }
}

impl GatewayRoute for HTTPRoute {
    const KIND: RouteKind = RouteKind::Http;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parents_and_hostnames(&self) -> (&[ParentReference], &[String]) {
        (&self.spec.parent_refs, &self.spec.hostnames)
    }
    fn rule_parts(&self) -> Vec<(Option<&str>, &[HttpBackendRef], &[HttpRouteFilter])> {
        let rules = self.spec.rules.iter();
        rules
            .map(|r| (r.name.as_deref(), &r.backend_refs[..], &r.filters[..]))
            .collect()
    }
    fn translate_rules(&self, index: &Index, key: &ObjectKey) -> Vec<Rule> {
        translate_rules(index, key, self)
    }
}

impl GatewayRoute for GRPCRoute {
    const KIND: RouteKind = RouteKind::Grpc;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parents_and_hostnames(&self) -> (&[ParentReference], &[String]) {
        (&self.spec.parent_refs, &self.spec.hostnames)
    }
    fn rule_parts(&self) -> Vec<(Option<&str>, &[HttpBackendRef], &[HttpRouteFilter])> {
        let rules = self.spec.rules.iter();
        rules
            .map(|r| (r.name.as_deref(), &r.backend_refs[..], &r.filters[..]))
            .collect()
    }
    fn translate_rules(&self, index: &Index, key: &ObjectKey) -> Vec<Rule> {
        super::grpc::translate_rules(index, key, self)
    }
}

/// What attaching reads of a route, whatever its kind.
pub struct RouteView<'a> {
    pub kind: RouteKind,
    pub key: &'a ObjectKey,
    pub parent_refs: &'a [ParentReference],
    pub hostnames: &'a [String],
}

/// One match of one rule on one hostname: a route of the table, once a policy is found for it.
pub struct RouteEntry {
    pub route_kind: RouteKind,
    pub route: ObjectKey,
    pub rule_name: Option<String>,
    pub gateway: ObjectKey,
    pub listener: String,
    /// An exact name, a wildcard (`*.example.com`) or `*`.
    pub hostname: String,
    pub path: String,
    pub conditions: MatchConditions,
    pub rank: u64,
    /// The policy the rule names with an `ExtensionRef` filter.
    pub extension_policy: Option<ObjectKey>,
    /// Header edits and rewrites; `None` when the rule has none.
    pub filters: Option<Arc<RouteFilters>>,
    /// The redirect the rule answers with instead of forwarding.
    pub redirect: Option<Arc<Redirect>>,
    /// Where to forward, or why the rule answers 500.
    pub backend: Result<Arc<Backend>, String>,
    /// The IapPolicy that protects it, once found; `None` refuses it with 403.
    pub policy: Option<ObjectKey>,
}

/// A route's entries, as one attachment produced them, with the table routes last made from
/// them: while every entry's policy compiles to the same thing and no other object contests
/// their hosts, a build reuses those instead of making 10,000 routes anew.
pub struct RouteEntries {
    pub entries: Vec<RouteEntry>,
    pub table_routes: std::sync::Mutex<Option<TableRoutes>>,
}

/// Table routes made from a route's entries, and the compiled policy each was made with (held,
/// so that comparing them by address is sound).
pub struct TableRoutes {
    pub policies: Vec<Option<Arc<crate::index::build::CompiledPolicy>>>,
    pub routes: Vec<Arc<crate::model::Route>>,
}

/// How a route fared at one of kube-iap's Gateways.
pub struct ParentOutcome {
    pub parent_ref: ParentReference,
    pub accepted: Cond,
    pub resolved: Cond,
    /// Rules that cannot be served as written (they answer 500); `None` when every rule is.
    pub partially_invalid: Option<Cond>,
    /// Indexes into the entries this parent produced.
    pub entries: std::ops::Range<usize>,
}

/// A rule translated once, whatever parent it is served under.
pub struct Rule {
    pub(super) name: Option<String>,
    matches: Vec<(String, MatchConditions)>,
    extension_policy: Option<ObjectKey>,
    filters: Option<Arc<RouteFilters>>,
    redirect: Option<Redirect>,
    backend: Result<Arc<Backend>, String>,
    /// Why the rule cannot be served as written, a feature kube-iap does not implement (it
    /// then answers 500, and the route is `PartiallyInvalid`).
    invalid: Option<String>,
    /// Why one of its matches cannot be served: then no rule of the route is.
    unmatchable: Option<String>,
    /// A reference that does not resolve: the ResolvedRefs reason and message.
    unresolved: Option<(&'static str, String)>,
}

/// Evaluates `route` against every Gateway it names that kube-iap serves, appending its entries.
/// `listeners` gets the (gateway, listener) positions the route attached to, for their
/// `attachedRoutes`.
pub fn attach(
    index: &Index,
    route: &RouteView<'_>,
    rules: &[Rule],
    gateways: &[ServedGateway],
    rank_base: u64,
    entries: &mut Vec<RouteEntry>,
    listeners: &mut Vec<(usize, usize)>,
) -> Vec<ParentOutcome> {
    // What the rules say is the same under every parent.
    let resolved = match rules.iter().find_map(|rule| rule.unresolved.clone()) {
        Some((reason, message)) => Cond::no("ResolvedRefs", reason, message),
        None => Cond::yes("ResolvedRefs", "ResolvedRefs", "Every reference resolved."),
    };
    let invalid: Vec<String> = rules
        .iter()
        .enumerate()
        .filter_map(|(at, rule)| {
            let name = || rule.name.clone().unwrap_or(at.to_string());
            rule.invalid
                .as_ref()
                .map(|why| format!("rule {}: {why}", name()))
        })
        .collect();
    let partially_invalid = (!invalid.is_empty()).then(|| {
        Cond::yes(
            "PartiallyInvalid",
            "UnsupportedValue",
            format!("These rules answer 500: {}.", invalid.join("; ")),
        )
    });
    let key = route.key;
    let mut outcomes = Vec::new();
    for parent in route.parent_refs {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let gateway_key = ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(&key.namespace),
            &parent.name,
        );
        let Some(position) = gateways.iter().position(|g| g.key == gateway_key) else {
            // Not a Gateway of kube-iap's: its own controller reports on it.
            continue;
        };
        let start = entries.len();
        let accepted = attach_to_listeners(
            index,
            route,
            parent,
            (position, &gateways[position]),
            rules,
            rank_base,
            entries,
            listeners,
        );
        outcomes.push(ParentOutcome {
            parent_ref: parent.clone(),
            accepted,
            resolved: resolved.clone(),
            partially_invalid: partially_invalid.clone(),
            entries: start..entries.len(),
        });
    }
    outcomes
}

/// Attaches the route to the listeners `parent` selects, adding an entry per rule, match and
/// hostname; says whether it was accepted.
#[allow(clippy::too_many_arguments)] // each is one plain input of the attachment
fn attach_to_listeners(
    index: &Index,
    route: &RouteView<'_>,
    parent: &ParentReference,
    (position, gateway): (usize, &ServedGateway),
    rules: &[Rule],
    rank_base: u64,
    entries: &mut Vec<RouteEntry>,
    listeners: &mut Vec<(usize, usize)>,
) -> Cond {
    let named: Vec<usize> = (0..gateway.listeners.len())
        .filter(|at| {
            let listener = &gateway.listeners[*at];
            parent
                .section_name
                .as_ref()
                .is_none_or(|name| *name == listener.name)
                && parent.port.is_none_or(|port| port == listener.port)
                && listener.accepted
        })
        .collect();
    if named.is_empty() {
        return Cond::no(
            "Accepted",
            "NoMatchingParent",
            "No accepted listener of the Gateway has this sectionName and port.",
        );
    }
    let key = route.key;
    let allowed: Vec<usize> = named
        .into_iter()
        .filter(|at| {
            let listener = &gateway.listeners[*at];
            let namespace_ok = match &listener.namespaces {
                AllowedNamespaces::Same => key.namespace == gateway.key.namespace,
                AllowedNamespaces::All => true,
                AllowedNamespaces::Selector(selector) => {
                    selector.as_ref().is_some_and(|selector| {
                        super::selector::selects_namespace(index, selector, &key.namespace)
                    })
                }
            };
            namespace_ok && listener.allows(route.kind)
        })
        .collect();
    if allowed.is_empty() {
        return Cond::no(
            "Accepted",
            "NotAllowedByListeners",
            format!(
                "The listeners' allowedRoutes do not admit a {} from this namespace.",
                route.kind.name()
            ),
        );
    }
    let mut attached = false;
    for at in allowed {
        let listener = &gateway.listeners[at];
        let hostnames = effective_hostnames(listener.hostname.as_deref(), route.hostnames);
        if hostnames.is_empty() {
            continue;
        }
        attached = true;
        listeners.push((position, at));
        if !listener.ready {
            // Attached, but the listener is not served (its status says why).
            continue;
        }
        let mut rank = rank_base;
        let listener_port = u16::try_from(listener.port).unwrap_or_default();
        for rule in rules {
            let redirect = rule.redirect.as_ref().map(|redirect| {
                Arc::new(Redirect {
                    listener_port,
                    ..redirect.clone()
                })
            });
            for (path, conditions) in &rule.matches {
                rank += 1;
                let conditions = MatchConditions {
                    tls_only: listener.tls,
                    ..conditions.clone()
                };
                for hostname in &hostnames {
                    entries.push(RouteEntry {
                        route_kind: route.kind,
                        route: key.clone(),
                        rule_name: rule.name.clone(),
                        gateway: gateway.key.clone(),
                        listener: listener.name.clone(),
                        hostname: hostname.clone(),
                        path: path.clone(),
                        conditions: conditions.clone(),
                        rank,
                        extension_policy: rule.extension_policy.clone(),
                        filters: rule.filters.clone(),
                        redirect: redirect.clone(),
                        backend: rule.backend.clone(),
                        policy: None,
                    });
                }
            }
        }
    }
    if attached {
        Cond::yes("Accepted", "Accepted", "Accepted by kube-iap.")
    } else {
        Cond::no(
            "Accepted",
            "NoMatchingListenerHostname",
            "None of the route's hostnames falls under a listener's hostname.",
        )
    }
}

/// The hostnames a route is served on under a listener: each route hostname that intersects
/// the listener's (the more specific of the two), or the listener's when the route names none.
pub fn effective_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    if route.is_empty() {
        return vec![listener.unwrap_or("*").to_string()];
    }
    let mut hostnames = Vec::new();
    for hostname in route {
        let hostname = hostname.to_ascii_lowercase();
        if let Some(served) = intersect(listener, &hostname) {
            if !hostnames.contains(&served) {
                hostnames.push(served);
            }
        }
    }
    hostnames
}

fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(listener) = listener else {
        return Some(route.to_string());
    };
    // `*.x` covers `a.x` and `a.b.x`, never `x` itself.
    let covers = |wildcard: &str, name: &str| {
        wildcard
            .strip_prefix('*')
            .is_some_and(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
    };
    if listener == route || covers(listener, route) {
        Some(route.to_string())
    } else if covers(route, listener) {
        Some(listener.to_string())
    } else {
        None
    }
}

/// Every rule of an HTTPRoute, translated.
pub fn translate_rules(index: &Index, key: &ObjectKey, route: &HTTPRoute) -> Vec<Rule> {
    let slices = SlicesByService::new(index);
    let rules = route
        .spec
        .rules
        .iter()
        .map(|rule| {
            let parts = RuleParts {
                kind: RouteKind::Http,
                name: rule.name.clone(),
                matches: rule.matches.iter().map(translate_match).collect(),
                refused: None,
                filters: &rule.filters,
                backend_refs: &rule.backend_refs,
            };
            translate_rule(index, &slices, key, parts)
        })
        .collect();
    fail_closed_if_unmatchable(rules)
}

/// A match kube-iap cannot serve (a regular expression) matches no request: left out, the
/// requests meant for its rule would reach the route's other rules, perhaps under a looser
/// policy. So every rule of such a route answers 500 instead, and the status says why.
pub(super) fn fail_closed_if_unmatchable(mut rules: Vec<Rule>) -> Vec<Rule> {
    let Some((at, why)) = rules.iter().enumerate().find_map(|(at, rule)| {
        let name = rule.name.clone().unwrap_or_else(|| at.to_string());
        rule.unmatchable.as_ref().map(|why| (name, why.clone()))
    }) else {
        return rules;
    };
    let why = format!(
        "the route is not served, because rule {at} has a match kube-iap cannot serve ({why})"
    );
    for rule in &mut rules {
        rule.backend = Err(why.clone());
        rule.redirect = None;
        rule.invalid.get_or_insert_with(|| why.clone());
    }
    rules
}

/// A rule of either route kind, its matches already translated.
pub(super) struct RuleParts<'a> {
    pub kind: RouteKind,
    pub name: Option<String>,
    pub matches: Vec<Result<(String, MatchConditions), String>>,
    /// Why the rule cannot be served as written, found before translating it.
    pub refused: Option<String>,
    pub filters: &'a [HttpRouteFilter],
    pub backend_refs: &'a [HttpBackendRef],
}

pub(super) fn translate_rule(
    index: &Index,
    slices: &SlicesByService<'_>,
    key: &ObjectKey,
    rule: RuleParts<'_>,
) -> Rule {
    let mut invalid = rule.refused;
    let mut unmatchable = None;
    let mut matches = Vec::new();
    for found in rule.matches {
        match found {
            Ok(translated) => matches.push(translated),
            Err(why) => {
                unmatchable.get_or_insert(why.clone());
                invalid.get_or_insert(why);
            }
        }
    }
    let has_exact_match = matches.iter().any(|(_, conditions)| conditions.exact_path);
    let translated = match super::filters::translate(index, key, rule.filters, has_exact_match) {
        Ok(translated) => translated,
        Err(why) => {
            invalid.get_or_insert(why);
            super::filters::Translated::default()
        }
    };
    let filters = translated.filters;
    let filters = (filters != RouteFilters::default()).then(|| Arc::new(filters));
    let (backend, unresolved) = rule_backend(index, slices, key, rule.kind, rule.backend_refs);
    let backend = backend.map_err(|problem| match problem {
        NoBackend::Unresolved(why) => why,
        NoBackend::Unsupported(why) => {
            invalid.get_or_insert(why.clone());
            why
        }
    });
    // A redirect answers without a backend: a missing one is no problem then.
    let (backend, unresolved) = match &translated.redirect {
        Some(_) => (Err(String::new()), None),
        None => (backend, unresolved),
    };
    Rule {
        name: rule.name,
        matches,
        extension_policy: translated.extension_policy,
        filters,
        // A rule not served as written answers 500 whatever its filters and backends.
        redirect: translated.redirect.filter(|_| invalid.is_none()),
        backend: match &invalid {
            Some(why) => Err(why.clone()),
            None => backend,
        },
        invalid,
        unmatchable,
        unresolved,
    }
}

fn translate_match(found: &HttpRouteMatch) -> Result<(String, MatchConditions), String> {
    let (exact_path, raw) = match &found.path {
        None => (false, "/"),
        Some(path) => {
            let value = path.value.as_deref().unwrap_or("/");
            match path.type_.as_deref().unwrap_or("PathPrefix") {
                "PathPrefix" => (false, value),
                "Exact" => (true, value),
                other => return Err(format!("path match type {other} is not served")),
            }
        }
    };
    let path = path::normalize(raw).map_err(|error| format!("path {raw:?}: {error}"))?;
    let mut conditions = MatchConditions {
        exact_path,
        method: found.method.as_ref().map(|m| m.to_ascii_uppercase()),
        ..MatchConditions::default()
    };
    add_header_matches(&mut conditions, &found.headers)?;
    for query in &found.query_params {
        if query.type_.as_deref().is_some_and(|t| t != "Exact") {
            return Err("only Exact query parameter matches are served".to_string());
        }
        if !conditions
            .query
            .iter()
            .any(|(present, _)| *present == query.name)
        {
            conditions
                .query
                .push((query.name.clone(), query.value.clone()));
        }
    }
    Ok((path, conditions))
}

/// Adds a match's header conditions, the first match on each name only, as the spec says.
pub(super) fn add_header_matches(
    conditions: &mut MatchConditions,
    headers: &[crate::api::gateway::ValueMatch],
) -> Result<(), String> {
    for header in headers {
        if header.type_.as_deref().is_some_and(|t| t != "Exact") {
            return Err("only Exact header matches are served".to_string());
        }
        let name = HeaderName::from_bytes(header.name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header name {:?} is not valid", header.name))?;
        if !conditions
            .headers
            .iter()
            .any(|(present, _)| *present == name)
        {
            conditions.headers.push((name, header.value.clone()));
        }
    }
    Ok(())
}

type Unresolved = Option<(&'static str, String)>;

/// Why a rule has no backend: a reference that does not resolve (`ResolvedRefs` says so), or a
/// use of backendRefs kube-iap does not serve yet (the route is `PartiallyInvalid`).
enum NoBackend {
    Unresolved(String),
    Unsupported(String),
}

/// The rule's backend: its backendRefs resolved, each taking a share of requests by its
/// weight (a reference that does not resolve keeps its share, which answers 500).
fn rule_backend(
    index: &Index,
    slices: &SlicesByService<'_>,
    key: &ObjectKey,
    kind: RouteKind,
    refs: &[HttpBackendRef],
) -> (Result<Arc<Backend>, NoBackend>, Unresolved) {
    if refs.iter().any(|reference| !reference.filters.is_empty()) {
        let why = "backendRef filters are not served yet".to_string();
        return (Err(NoBackend::Unsupported(why)), None);
    }
    let mut unresolved: Unresolved = None;
    let mut parts = Vec::new();
    let mut names = Vec::new();
    // Whether each resolved Service port speaks h2c (a GRPCRoute's always do).
    let mut protocols = Vec::new();
    for reference in refs {
        let weight = u32::try_from(reference.weight.unwrap_or(1)).unwrap_or_default();
        match resolve_ref(index, slices, key, kind, reference) {
            Ok(resolved) => {
                if weight > 0 {
                    names.push(resolved.name);
                    protocols.push(kind == RouteKind::Grpc || resolved.h2c);
                }
                parts.push((Some(resolved.upstreams), weight));
            }
            Err(problem) => {
                parts.push((None, weight));
                unresolved.get_or_insert(problem);
            }
        }
    }
    let served: Vec<_> = parts.iter().filter(|(_, weight)| *weight > 0).collect();
    let backend = match (served.as_slice(), &unresolved) {
        ([], _) if refs.is_empty() => {
            Err(NoBackend::Unresolved("the rule has no backendRefs".into()))
        }
        ([], _) => Err(NoBackend::Unresolved(
            "every backendRef has weight 0".into(),
        )),
        ([(None, _)], Some((_, message))) => Err(NoBackend::Unresolved(message.clone())),
        ([(Some(upstreams), _)], _) => Ok(Backend::new(names.remove(0), upstreams.clone())),
        _ if served.iter().all(|(part, _)| part.is_none()) => Err(NoBackend::Unresolved(
            unresolved
                .as_ref()
                .map(|(_, message)| message.clone())
                .unwrap_or_default(),
        )),
        _ => Ok(Backend::weighted(names.join(" + "), parts)),
    };
    let h2c = protocols
        .first()
        .copied()
        .unwrap_or(kind == RouteKind::Grpc);
    if protocols.iter().any(|each| *each != h2c) {
        let why = format!(
            "its backendRefs mix Services that speak h2c (appProtocol {H2C_APP_PROTOCOL}) and HTTP/1.1"
        );
        return (Err(NoBackend::Unsupported(why)), unresolved);
    }
    let backend = backend.map(|backend| match h2c {
        false => Arc::new(backend),
        true => Arc::new(backend.speaking_h2c()),
    });
    (backend, unresolved)
}

fn resolve_ref(
    index: &Index,
    slices: &SlicesByService<'_>,
    key: &ObjectKey,
    kind: RouteKind,
    reference: &HttpBackendRef,
) -> Result<ResolvedBackend, (&'static str, String)> {
    let group = reference.group.as_deref().unwrap_or("");
    let ref_kind = reference.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || ref_kind != "Service" {
        return Err((
            "InvalidKind",
            format!(
                "backendRef {ref_kind} {:?} (group {group:?}) is not a Service.",
                reference.name
            ),
        ));
    }
    let namespace = reference.namespace.as_deref().unwrap_or(&key.namespace);
    let service_key = ObjectKey::new(namespace, &reference.name);
    if namespace != key.namespace
        && !super::reference_granted(index, kind.name(), &key.namespace, "Service", &service_key)
    {
        return Err((
            "RefNotPermitted",
            format!(
                "backendRef Service {service_key} is in another namespace, and no ReferenceGrant there allows it."
            ),
        ));
    }
    let port = reference
        .port
        .and_then(|port| u16::try_from(port).ok())
        .ok_or((
            "BackendNotFound",
            format!("backendRef Service {service_key} names no port."),
        ))?;
    backends::resolve(
        &service_key,
        index.service(&service_key),
        &PortSelector::Number(port),
        slices,
    )
    .map_err(|error| ("BackendNotFound", format!("{error}.")))
}
