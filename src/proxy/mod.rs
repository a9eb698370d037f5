//! The data plane: accepts connections, and for each request routes, admits and forwards. It reads
//! only the routing model ([`crate::model`]); it never sees Kubernetes types.

mod forward;
mod h1;
mod h2c;
mod handler;
pub mod headers;
mod identity;
mod idle_pool;
pub mod pages;
mod request_body;
mod request_id;
mod reserved;
mod route_metrics;
mod server;
mod tls;
mod tunnel;
mod upstream;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;

use crate::auth::assertion::{Jwks, SigningKeys};
use crate::auth::bearer::BearerCache;
use crate::auth::login::Logins;
use crate::auth::session::KeyRing;
use crate::auth::session_cache::SessionCache;
use crate::metrics::Metrics;
use crate::model::{AddressLimit, RoutingTable};

pub use server::{serve_plain, serve_tls};
pub use tls::server_config;
pub use workers::Workers;

/// The body of every response the proxy sends: generated pages and streamed upstream bodies alike.
/// `iss` of the signed assertion unless configured: a URN, since JWT libraries expect a URI.
pub const DEFAULT_ASSERTION_ISSUER: &str = "urn:kube-iap";

/// Verified bearer tokens kept per worker: each entry holds the token (about 1 KB) and its
/// identity, so at most about 12 MiB.
const BEARER_CACHE_CAPACITY: usize = 10_000;
/// Opened session cookies kept per worker: some 600 bytes each, so at most about 6 MiB.
const SESSION_CACHE_CAPACITY: usize = 10_000;

pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The error of a response body, whichever client read it from the upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The table the data plane reads: swapped whole on every change, read lock-free per request.
pub type SharedTable = Arc<ArcSwap<RoutingTable>>;

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Time allowed to open a connection to an upstream.
    pub connect_timeout: Duration,
    /// Time allowed for an upstream to send its response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Time allowed for a client to send request headers.
    pub header_read_timeout: Duration,
    /// Whether to write one access-log line per request.
    pub access_log: bool,
    /// Worker threads serving connections (thread-per-core).
    pub workers: usize,
    /// Total time allowed for one call to an identity provider (discovery, keys, token
    /// exchange); connecting gets at most half of it.
    pub idp_timeout: Duration,
    /// `iss` of the signed assertions backends receive.
    pub assertion_issuer: String,
    /// Proxies (load balancers) whose `X-Forwarded-For` is believed for `sourceCidrs` and the
    /// per-address sign-in limit.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-in redirects and callbacks accepted per client address and minute.
    pub sign_in_per_minute: u32,
    /// Send Google IAP's `x-goog-authenticated-user-*` headers on every route, as if every
    /// policy set `googleCompatibleHeaders`.
    pub google_compatible_headers: bool,
    /// A token naming a key its issuer's cached key set lacks refetches the keys at most once
    /// per this interval and issuer.
    pub key_refresh_interval: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(30),
            access_log: true,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idp_timeout: Duration::from_secs(5),
            assertion_issuer: DEFAULT_ASSERTION_ISSUER.to_string(),
            trusted_proxies: Vec::new(),
            sign_in_per_minute: 1200,
            google_compatible_headers: false,
            key_refresh_interval: crate::auth::providers::KEY_REFRESH_INTERVAL,
        }
    }
}

/// Shared state of every connection.
/// What every worker's proxy shares for authentication.
#[derive(Clone)]
pub struct AuthShared {
    /// Session keys when the table has none (no Secret): generated at start.
    pub fallback_keys: Arc<KeyRing>,
    pub logins: Arc<Logins>,
    /// Assertion signing keys when the table has none (no Secret): generated at start.
    pub fallback_signing_keys: Arc<SigningKeys>,
    /// The published assertion keys, current and recently retired.
    pub jwks: Arc<Jwks>,
    /// `iss` of the signed assertions.
    pub assertion_issuer: Arc<str>,
    /// Per-client-address limit on sign-in redirects and callbacks.
    pub sign_in_limit: Arc<AddressLimit>,
}

pub struct Proxy {
    table: SharedTable,
    fallback_keys: Arc<KeyRing>,
    logins: Arc<Logins>,
    fallback_signing_keys: Arc<SigningKeys>,
    jwks: Arc<Jwks>,
    assertion_issuer: Arc<str>,
    sign_in_limit: Arc<AddressLimit>,
    /// Verified bearer tokens (per worker, so lookups never contend across threads).
    bearer_cache: BearerCache,
    assertions: identity::AssertionCache,
    /// Session cookies already opened (per worker, like the bearer cache).
    sessions: SessionCache,
    upstream: forward::UpstreamClient,
    metrics: Arc<Metrics>,
    route_metrics: route_metrics::RouteMetrics,
    config: ProxyConfig,
    request_ids: request_id::RequestIds,
}

impl Proxy {
    /// `fallback_keys` seal and open sessions whenever the table holds no keys of its own.
    pub fn new(
        table: SharedTable,
        metrics: Arc<Metrics>,
        config: ProxyConfig,
        auth: AuthShared,
    ) -> Arc<Self> {
        Arc::new(Proxy {
            table,
            fallback_keys: auth.fallback_keys,
            logins: auth.logins,
            fallback_signing_keys: auth.fallback_signing_keys,
            jwks: auth.jwks,
            assertion_issuer: auth.assertion_issuer,
            sign_in_limit: auth.sign_in_limit,
            bearer_cache: BearerCache::new(BEARER_CACHE_CAPACITY),
            assertions: identity::AssertionCache::default(),
            sessions: SessionCache::new(SESSION_CACHE_CAPACITY),
            upstream: forward::UpstreamClient::new(&config),
            metrics,
            route_metrics: route_metrics::RouteMetrics::default(),
            config,
            request_ids: request_id::RequestIds::new(),
        })
    }
}
