//! The immutable routing table. A change builds a whole new table and publishes it; each request
//! reads the current one once.

use foldhash::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::auth::assertion::SigningKeys;
use crate::auth::session::KeyRing;

use super::route_match::{MatchConditions, Precedence, RequestView};
use super::{
    AccessPolicy, Backend, BackendIdentity, RateLimit, Redirect, RouteFilters, SignIn, TunnelGrant,
};
use crate::error_codes::ErrorCode;

/// What a matched route does.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to the backend once the request is admitted.
    Forward(Arc<Backend>),
    /// The resource behind the route is invalid: answer with the problem, never forward.
    FailClosed {
        code: Option<ErrorCode>,
        reason: String,
    },
    /// No policy protects the route (a Gateway API route nobody attached an IapPolicy to):
    /// refuse every request with 403, never serve it open.
    Unprotected { reason: String },
    /// Answer with a redirect (a Gateway API `RequestRedirect` filter); nothing is forwarded.
    Redirect(Arc<Redirect>),
}

/// One host + path prefix and what serves it.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the IapPolicy, the route's name in logs and metrics.
    pub policy: String,
    /// A host name, a wildcard (`*.example.com`) or `*` for every host.
    pub host: String,
    pub prefix: String,
    /// Further conditions (Gateway API routes); `None` matches on host and prefix alone.
    pub conditions: Option<Arc<MatchConditions>>,
    /// Order among routes of equal precedence: lower first (see [`Precedence`]).
    pub rank: u64,
    /// Header edits and rewrites of a Gateway API rule; `None` forwards the request as it is.
    pub filters: Option<Arc<RouteFilters>>,
    pub access: Arc<AccessPolicy>,
    pub action: RouteAction,
    /// How users sign in here; `None` when the route fails closed before sign-in matters.
    pub sign_in: Option<Arc<SignIn>>,
    /// What the backend is told about the caller.
    pub backend_identity: Arc<BackendIdentity>,
    /// The policy's request limit, shared by all its routes.
    pub rate_limit: Arc<RateLimit>,
    /// Who may open TCP tunnels to which ports (`spec.tcpForwarding`).
    pub tunnel: Option<Arc<TunnelGrant>>,
}

impl Route {
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        match &self.conditions {
            None => super::path::has_prefix(request.path, &self.prefix),
            Some(conditions) => conditions.holds(&self.prefix, request),
        }
    }

    fn precedence(&self) -> Precedence {
        Precedence::of(&self.prefix, self.conditions.as_deref(), self.rank)
    }
}

/// TLS certificates by server name.
#[derive(Debug, Default)]
pub struct TlsCertificates {
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl TlsCertificates {
    /// The certificate for `server_name`, else for the most specific wildcard covering it.
    pub fn get(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        if let Some(key) = self.by_name.get(&name) {
            return Some(key.clone());
        }
        wildcards_of(&name).find_map(|wildcard| self.by_name.get(&wildcard).cloned())
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The wildcard names that cover `host`, most specific first: `*.b.c` then `*.c` for `a.b.c`,
/// then `*` (every host).
fn wildcards_of(host: &str) -> impl Iterator<Item = String> + '_ {
    host.match_indices('.')
        .map(|(at, _)| format!("*{}", &host[at..]))
        .chain(std::iter::once("*".to_string()))
}

/// Routes by host, each host's routes in precedence order (longest prefix first).
#[derive(Debug, Default)]
pub struct RoutingTable {
    hosts: HashMap<String, Vec<Arc<Route>>>,
    /// Whether any host is a wildcard; only then does a lookup try more than the exact name.
    has_wildcards: bool,
    pub certificates: TlsCertificates,
    /// Session keys from the configured Secret; `None` when it is absent or holds no usable key.
    pub session_keys: Option<Arc<KeyRing>>,
    /// Assertion signing keys from their Secret; `None` when absent.
    pub signing_keys: Option<Arc<SigningKeys>>,
}

impl RoutingTable {
    /// The route for `host` (any case, with or without port) and a normalised `path`, for
    /// callers that know nothing else of the request.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.route_for(host, &RequestView::path_only(path))
    }

    /// The first route, in precedence order, that matches the request: among the routes of the
    /// exact host name, then of each wildcard covering it, most specific first.
    pub fn route_for(&self, host: &str, request: &RequestView<'_>) -> Option<&Arc<Route>> {
        let host = canonical_host(host);
        let exact = self.hosts.get(host.as_ref());
        let found = exact.and_then(|routes| routes.iter().find(|route| route.matches(request)));
        if found.is_some() || !self.has_wildcards {
            return found;
        }
        wildcards_of(&host).find_map(|wildcard| {
            self.hosts
                .get(&wildcard)
                .and_then(|routes| routes.iter().find(|route| route.matches(request)))
        })
    }

    /// Every route of `host` (any case, with or without port) in precedence order: those of the
    /// exact name, else of the most specific wildcard covering it.
    pub fn host_routes(&self, host: &str) -> &[Arc<Route>] {
        let host = canonical_host(host);
        if let Some(routes) = self.hosts.get(host.as_ref()) {
            return routes;
        }
        if !self.has_wildcards {
            return &[];
        }
        wildcards_of(&host)
            .find_map(|wildcard| self.hosts.get(&wildcard))
            .map_or(&[], Vec::as_slice)
    }

    /// Every route of every host.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.hosts.values().flatten()
    }

    pub fn route_count(&self) -> usize {
        self.hosts.values().map(Vec::len).sum()
    }
}

/// Lower-cases a Host header value and strips its port and trailing dot. Borrows when the value
/// is already canonical, which is the common case on the request path.
pub fn canonical_host(host: &str) -> std::borrow::Cow<'_, str> {
    // One backward pass over the bytes rather than `rsplit_once` and two more scans: this runs
    // twice per request, and the string searches were ~600 instructions of it (`bench/cost.sh`).
    let bytes = host.as_bytes();
    let mut port_starts = bytes.len();
    while port_starts > 0 && bytes[port_starts - 1].is_ascii_digit() {
        port_starts -= 1;
    }
    // A port is the digits after the last `:`; an IPv6 literal keeps its brackets, and a name
    // ending in `::` (an unbracketed IPv6 address) keeps its last group.
    let mut end = bytes.len();
    if port_starts > 0
        && bytes[port_starts - 1] == b':'
        && (port_starts < 2 || bytes[port_starts - 2] != b':')
    {
        end = port_starts - 1;
    }
    if end > 0 && bytes[end - 1] == b'.' {
        end -= 1;
    }
    let trimmed = &host[..end];
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

/// Collects routes and certificates, then freezes them into a [`RoutingTable`].
#[derive(Default)]
pub struct RoutingTableBuilder {
    table: RoutingTable,
}

impl RoutingTableBuilder {
    /// A builder with room for about `hosts` hosts.
    pub fn with_capacity(hosts: usize) -> Self {
        let mut builder = RoutingTableBuilder::default();
        builder.table.hosts.reserve(hosts);
        builder
    }

    /// Adds a route, which other tables may hold too (routes are immutable). The caller has
    /// already resolved conflicts: one route per host and prefix.
    pub fn add_route(&mut self, route: Arc<Route>) {
        let host = canonical_host(&route.host).into_owned();
        self.table.has_wildcards |= host.starts_with('*');
        self.table.hosts.entry(host).or_default().push(route);
    }

    pub fn set_session_keys(&mut self, keys: Option<Arc<KeyRing>>) {
        self.table.session_keys = keys;
    }

    pub fn set_signing_keys(&mut self, keys: Option<Arc<SigningKeys>>) {
        self.table.signing_keys = keys;
    }

    /// Adds the certificate for `server_name` unless one was added before: callers add the
    /// older owner's first, and a newer object must not take a hostname's certificate over.
    pub fn add_certificate(&mut self, server_name: &str, key: Arc<CertifiedKey>) {
        self.table
            .certificates
            .by_name
            .entry(canonical_host(server_name).into_owned())
            .or_insert(key);
    }

    pub fn build(mut self) -> RoutingTable {
        for routes in self.table.hosts.values_mut() {
            // Most specific first (longest prefix, for routes without conditions), so the first
            // match is the one that applies.
            routes.sort_by_key(|route| route.precedence());
        }
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, prefix: &str, policy: &str) -> Route {
        Route {
            policy: policy.into(),
            host: host.into(),
            prefix: prefix.into(),
            conditions: None,
            rank: 0,
            filters: None,
            access: Arc::default(),
            action: RouteAction::FailClosed {
                code: None,
                reason: "test".into(),
            },
            sign_in: None,
            backend_identity: Arc::new(BackendIdentity {
                assertion_audience: format!("/namespaces/ns/iappolicies/{policy}"),
                include_groups: false,
                google_compatible: false,
                pass_authorization: false,
            }),
            rate_limit: Arc::new(RateLimit::per_minute(1000)),
            tunnel: None,
        }
    }

    fn table() -> RoutingTable {
        let mut builder = RoutingTableBuilder::default();
        builder.add_route(Arc::new(route("app.example.com", "/", "ns/root")));
        builder.add_route(Arc::new(route("app.example.com", "/api", "ns/api")));
        builder.add_route(Arc::new(route("app.example.com", "/api/admin", "ns/admin")));
        builder.add_route(Arc::new(route("Other.Example.com", "/docs", "ns/docs")));
        builder.build()
    }

    #[test]
    fn longest_prefix_wins_and_host_is_case_and_port_insensitive() {
        let table = table();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("app.example.com", "/", Some("ns/root")),
            ("app.example.com", "/apis", Some("ns/root")),
            ("app.example.com", "/api", Some("ns/api")),
            ("app.example.com", "/api/v1", Some("ns/api")),
            ("APP.example.com:8443", "/api/admin/users", Some("ns/admin")),
            ("app.example.com.", "/api/admin", Some("ns/admin")),
            ("other.example.com", "/docs/x", Some("ns/docs")),
            ("other.example.com", "/", None),
            ("unknown.example.com", "/", None),
        ];
        for (host, path, want) in cases {
            let got = table.route(host, path).map(|route| route.policy.as_str());
            assert_eq!(got, *want, "route({host:?}, {path:?})");
        }
    }

    #[test]
    fn wildcard_hosts_cover_subdomains_most_specific_first_and_exact_names_win() {
        let mut builder = RoutingTableBuilder::default();
        builder.add_route(Arc::new(route("*", "/", "ns/any")));
        builder.add_route(Arc::new(route("*.example.com", "/", "ns/wide")));
        builder.add_route(Arc::new(route("*.api.example.com", "/", "ns/narrow")));
        builder.add_route(Arc::new(route(
            "exact.api.example.com",
            "/only",
            "ns/exact",
        )));
        let table = builder.build();
        let cases: &[(&str, &str, &str)] = &[
            ("a.example.com", "/", "ns/wide"),
            ("a.b.example.com", "/", "ns/wide"),
            ("v1.api.example.com", "/", "ns/narrow"),
            ("exact.api.example.com", "/only/x", "ns/exact"),
            // Nothing of the exact name matches: the covering wildcard's routes are next.
            ("exact.api.example.com", "/", "ns/narrow"),
            ("example.com", "/", "ns/any"),
            ("other.test", "/", "ns/any"),
        ];
        for (host, path, want) in cases {
            let got = table.route(host, path).map(|route| route.policy.as_str());
            assert_eq!(got, Some(*want), "route({host:?}, {path:?})");
        }
        assert_eq!(table.host_routes("b.example.com")[0].policy, "ns/wide");
    }

    #[test]
    fn canonical_host_strips_ports_but_keeps_ipv6_literals() {
        assert_eq!(canonical_host("Example.COM:80"), "example.com");
        assert_eq!(canonical_host("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(canonical_host("[::1]:8080"), "[::1]");
        assert_eq!(canonical_host("[::1]"), "[::1]");
        assert_eq!(canonical_host("localhost"), "localhost");
    }

    /// The byte scan agrees with the plain reading of the rule: split at the last `:`, strip it
    /// when only digits follow and the name does not end in `:`, then a trailing dot, then case.
    #[test]
    fn canonical_host_agrees_with_the_rule_as_written() {
        fn by_the_rule(host: &str) -> String {
            let name = match host.rsplit_once(':') {
                Some((name, port))
                    if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') =>
                {
                    name
                }
                _ => host,
            };
            name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
        }
        let hosts = [
            "",
            ":",
            "::",
            ":::",
            ":80",
            "::80",
            "a:",
            "a::",
            "a::80",
            "a:b:80",
            "a.:80",
            "a.",
            "a..",
            ".",
            "A.B:0",
            "[::1]",
            "[::1]:",
            "[::1]:443",
            "[fe80::1%25eth0]:8",
            "::1",
            "1:2:3::4",
            "example.com:8o80",
            "example.com:80:80",
            "EXAMPLE.com.:65535",
            "x:123456",
            "ünï.example:80",
        ];
        for host in hosts {
            assert_eq!(canonical_host(host), by_the_rule(host), "host {host:?}");
        }
    }
}
