//! The per-request path: route → strip → reserved paths → admit → forward, each a small step. The
//! table snapshot is read once, at the start.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::request_body::RequestBody;
use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::forward::{Origin, Sending};
use super::headers::strip_identity_headers;
use super::headers::{client_address, client_used_tls, is_upgrade_request};
use super::pages::{self, Answer};
use super::reserved::Reserved;
use super::tunnel::{TUNNEL_PATH, TunnelRequest, requested_port};
use super::{Proxy, ProxyBody};
use crate::auth::assertion::{Breakage, SigningKeys};
use crate::auth::bearer::{BearerHeader, bearer_token};
use crate::auth::cookies::strip_proxy_cookies;
use crate::auth::decision::{Unauthenticated, decide};
use crate::auth::login::LoginRequest;
use crate::auth::session::{KeyRing, unix_now};
use crate::model::path;
use crate::model::{Decision, RequestFacts};
use crate::model::{Identity, canonical_host};
use crate::model::{RequestView, Route, RouteAction, RoutingTable};

/// Forwarded (not answered) with an assertion broken as its `type` says.
pub const SECURE_TOKEN_TEST: &str = "/_iap/secure_token_test";

/// Prefix of the paths kube-iap answers itself on every host.
pub const RESERVED_PREFIX: &str = "/_iap/";

/// What the server knows about the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Facts about a handled request for the access log and metrics; never a header value or query.
/// Host and path are only copied when the access log is on.
#[derive(Default)]
struct Outcome {
    route: Option<Arc<Route>>,
    host: String,
    path: String,
    /// How long the upstream took to answer, when the request was forwarded.
    upstream_seconds: Option<f64>,
}

impl Outcome {
    fn route_name(&self) -> &str {
        self.route
            .as_ref()
            .map_or("-", |route| route.policy.as_str())
    }
}

impl Proxy {
    /// Handles one request. Everything that decides about it runs when this is called, before
    /// the first await, so the future returned holds little more than what sending upstream
    /// needs: the request's future is moved on its way up (into the connection's task), so its
    /// size is paid on every request. The rare paths that wait come back boxed.
    pub fn handle(
        &self,
        request: Request<RequestBody>,
        connection: Connection,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
        // Only the access log reads the whole request's latency and its method.
        let started = self.config.access_log.then(Instant::now);
        let method = self.config.access_log.then(|| request.method().clone());
        let request_id = self.request_ids.next();
        let format = pages::Format::of(request.headers());
        let mut outcome = Outcome::default();
        let step = self.admit(request, connection, &request_id, &mut outcome);
        async move {
            let ready = match step {
                Ok(Step::Ready(ready)) => Ok(ready),
                Ok(Step::Wait(waiting)) => waiting.await,
                Err(answer) => Err(answer),
            };
            let result = match ready {
                Ok(Ready::Answered(response)) => Ok(response),
                Ok(Ready::Send(sending)) => {
                    let sent = Instant::now();
                    let mut response = sending.send().await;
                    outcome.upstream_seconds = Some(sent.elapsed().as_secs_f64());
                    let edits = outcome
                        .route
                        .as_ref()
                        .and_then(|route| route.filters.as_ref())
                        .and_then(|filters| filters.response_headers.as_ref());
                    if let (Some(edits), Ok(response)) = (edits, response.as_mut()) {
                        edits.apply(response.headers_mut());
                    }
                    response
                }
                Err(answer) => Err(answer),
            };
            // Metrics and the log count a refusal by what it means, also when a gRPC client
            // gets it as HTTP 200 with a gRPC status.
            let (response, status) = match result {
                Ok(response) => {
                    let status = response.status();
                    (response, status)
                }
                Err(answer) => (
                    pages::respond(&answer, format, &request_id),
                    answer.status(),
                ),
            };
            self.route_metrics.record(
                &self.metrics,
                outcome.route_name(),
                status,
                outcome.upstream_seconds,
            );
            if let (Some(started), Some(method)) = (started, method) {
                tracing::info!(
                    target: "kube_iap::access",
                    request_id = request_id.to_str().unwrap_or("-"),
                    peer = %connection.peer,
                    method = %method,
                    host = %outcome.host,
                    path = %outcome.path,
                    status = status.as_u16(),
                    latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    route = outcome.route_name(),
                );
            }
            response
        }
    }

    /// Routes, authenticates and authorizes: either the answer, or the request ready to forward,
    /// or a boxed future for the paths that wait (a bearer token's first check, the proxy's own
    /// paths, the start of a sign-in, a tunnel).
    fn admit(
        &self,
        mut request: Request<RequestBody>,
        connection: Connection,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Step<'_>, Answer> {
        let authority = request_authority(&request)
            .ok_or(Answer::MissingHost)?
            .to_string();
        let host = canonical_host(&authority).into_owned();
        // The authority policy is decided for is the one the backend is told: a Host header
        // beside an authority in the request target (HTTP/2's :authority, an absolute-form
        // HTTP/1.1 target) would otherwise name another host to the backend.
        if request.uri().authority().is_some() {
            if let Ok(value) = HeaderValue::from_str(&authority) {
                request.headers_mut().insert(header::HOST, value);
            }
        }
        let path = path::normalize(request.uri().path())
            .map_err(|error| Answer::BadPath(error.to_string()))?;
        if self.config.access_log {
            outcome.host.clone_from(&host);
            outcome.path.clone_from(&path);
        }

        strip_identity_headers(request.headers_mut());
        // The snapshot is read once; what is needed is kept, the guard is not held across awaits.
        let table = self.table.load_full();
        let breakage = match path == SECURE_TOKEN_TEST {
            true => Some(secure_token_breakage(request.uri().query().unwrap_or(""))?),
            false => None,
        };
        let admitting = Admitting {
            tls: client_used_tls(
                connection.tls,
                connection.peer.ip(),
                request.headers(),
                &self.config.trusted_proxies,
            ),
            client: client_address(
                connection.peer.ip(),
                request.headers(),
                &self.config.trusted_proxies,
            ),
            keys: table
                .session_keys
                .clone()
                .unwrap_or_else(|| self.fallback_keys.clone()),
            signing_keys: table
                .signing_keys
                .clone()
                .unwrap_or_else(|| self.fallback_signing_keys.clone()),
            request,
            authority,
            host,
            path,
            breakage,
        };
        if admitting.path == TUNNEL_PATH {
            let route = table
                .host_routes(&admitting.host)
                .first()
                .cloned()
                .ok_or(Answer::NoRoute)?;
            outcome.route = Some(route.clone());
            self.check_rate_limit(&route)?;
            return Ok(Step::Wait(Box::pin(self.tunnel(
                admitting,
                route,
                request_id.clone(),
            ))));
        }
        if admitting.path.starts_with(RESERVED_PREFIX) && admitting.breakage.is_none() {
            let routes = table.host_routes(&admitting.host);
            let first = routes.first().ok_or(Answer::NoRoute)?;
            outcome.route = Some(first.clone());
            return Ok(Step::Wait(Box::pin(self.answer_reserved(
                admitting,
                table,
                request_id.clone(),
            ))));
        }
        let view = RequestView {
            path: &admitting.path,
            method: admitting.request.method().as_str(),
            headers: Some(admitting.request.headers()),
            query: admitting.request.uri().query().unwrap_or(""),
            tls: admitting.tls,
        };
        let route = table
            .route_for(&admitting.host, &view)
            .cloned()
            .ok_or(Answer::NoRoute)?;
        outcome.route = Some(route.clone());
        self.check_rate_limit(&route)?;
        let backend = match &route.action {
            RouteAction::FailClosed { code, reason } => {
                tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), route = %route.policy, reason = %reason, "route fails closed");
                return Err(Answer::Misconfigured(*code));
            }
            RouteAction::Unprotected { reason } => {
                tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), route = %route.policy, reason = %reason, "route has no policy");
                return Err(Answer::Unprotected);
            }
            RouteAction::Redirect(redirect) => {
                let location = redirect.location(
                    admitting.tls,
                    &admitting.host,
                    &admitting.path,
                    admitting.request.uri().query(),
                    &route.prefix,
                );
                let response = pages::redirect(redirect.status, &location, request_id)?;
                return Ok(Step::Ready(Ready::Answered(response)));
            }
            RouteAction::Forward(backend) => backend.clone(),
        };

        let now = unix_now();
        // Public paths carry no identity at all, even for a signed-in user. A bearer token, when
        // present, decides alone: an invalid one is refused, never passed over for cookies.
        if admitting.is_public(&route) {
            return self.authorize(admitting, route, backend, None, now, request_id);
        }
        if let Some((header, token)) = bearer_token(admitting.request.headers()) {
            // A token checked before is answered from the cache, without waiting.
            let cached = route
                .sign_in
                .as_ref()
                .and_then(|sign_in| self.bearer_cache.get(&sign_in.client, token, now));
            if let Some((identity, expires_at)) = cached {
                let credential = Credential::bearer(identity, expires_at, header);
                return self.authorize(
                    admitting,
                    route,
                    backend,
                    Some(credential),
                    now,
                    request_id,
                );
            }
            return Ok(Step::Wait(Box::pin(self.authorize_bearer(
                admitting,
                route,
                backend,
                now,
                request_id.clone(),
            ))));
        }
        let identity = self
            .sessions
            .session_from(
                admitting.request.headers(),
                &admitting.host,
                &admitting.keys,
                now,
            )
            .map(|(identity, expires_at)| Credential {
                identity,
                expires_at,
                in_authorization: false,
            });
        self.authorize(admitting, route, backend, identity, now, request_id)
    }

    /// The rest of [`Proxy::admit`] for a request with a bearer token, checked (the first time
    /// it is seen) against the provider's keys.
    async fn authorize_bearer(
        &self,
        admitting: Admitting,
        route: Arc<Route>,
        backend: Arc<crate::model::Backend>,
        now: u64,
        request_id: HeaderValue,
    ) -> Result<Ready<'_>, Answer> {
        let sign_in = route.sign_in.as_ref().ok_or(Answer::Misconfigured(None))?;
        let (header, token) =
            bearer_token(admitting.request.headers()).ok_or(Answer::Unauthenticated)?;
        let (identity, expires_at) = self.bearer_identity(&sign_in.client, token).await?;
        let credential = Credential::bearer(identity, expires_at, header);
        match self.authorize(
            admitting,
            route,
            backend,
            Some(credential),
            now,
            &request_id,
        )? {
            Step::Ready(ready) => Ok(ready),
            Step::Wait(waiting) => waiting.await,
        }
    }

    /// Decides on the request with the identity its credential gave (if any), and prepares it
    /// for its backend.
    fn authorize(
        &self,
        mut admitting: Admitting,
        route: Arc<Route>,
        backend: Arc<crate::model::Backend>,
        credential: Option<Credential>,
        now: u64,
        request_id: &HeaderValue,
    ) -> Result<Step<'_>, Answer> {
        let facts = RequestFacts {
            path: &admitting.path,
            method: admitting.request.method().as_str(),
            client: admitting.client,
            now: i64::try_from(now).unwrap_or(i64::MAX),
        };
        let identity = credential.as_ref().map(|credential| &*credential.identity);
        match (identity, route.access.evaluate(identity, &facts)) {
            (_, Decision::Allow(_)) => {}
            _ if admitting.is_public(&route) => {}
            (Some(identity), Decision::Deny(denial)) => {
                let who = identity
                    .email
                    .clone()
                    .or_else(|| identity.service_account.clone())
                    .unwrap_or_else(|| identity.subject.clone());
                return Err(Answer::Forbidden {
                    identity: who,
                    policy: route.policy.clone(),
                    reason: denial.reason(),
                });
            }
            (None, Decision::Deny(_)) => match anonymous(&route, &admitting.request) {
                Anonymous::Forward => {}
                Anonymous::Deny(answer) => return Err(answer),
                Anonymous::SignIn => {
                    return Ok(Step::Wait(Box::pin(self.sign_in(
                        admitting,
                        route,
                        request_id.clone(),
                    ))));
                }
            },
        }
        let request = &mut admitting.request;
        // The credential used to reach the proxy is the proxy's, not the backend's.
        strip_proxy_cookies(request.headers_mut());
        request.headers_mut().remove(header::PROXY_AUTHORIZATION);
        let in_authorization = credential.as_ref().is_some_and(|c| c.in_authorization);
        if in_authorization && !route.backend_identity.pass_authorization {
            request.headers_mut().remove(header::AUTHORIZATION);
        }
        let revoked = match &credential {
            Some(credential) if is_upgrade_request(request.headers()) => Some(self.watch_access(
                &admitting.host,
                &admitting.path,
                request.method().as_str(),
                admitting.client,
                credential.identity.clone(),
                credential.expires_at,
            )),
            _ => None,
        };
        let mut upstream_path = None;
        if let Some(filters) = &route.filters {
            if let Some(edits) = &filters.request_headers {
                edits.apply(request.headers_mut());
            }
            if let Some(rewrite) = &filters.rewrite {
                if let Some(host) = &rewrite.hostname {
                    request.headers_mut().insert(header::HOST, host.clone());
                }
                upstream_path = rewrite
                    .path
                    .as_ref()
                    .map(|path| path.apply(&admitting.path, &route.prefix));
            }
        }
        // Written into the request by whichever client forwards it: the lean one puts them
        // straight into the head, which costs no header-map insertions.
        let identity = credential.as_ref().map(|credential| {
            self.identity_fields(
                &credential.identity,
                &route.backend_identity,
                &admitting.signing_keys,
                admitting.breakage.unwrap_or(Breakage::None),
            )
        });
        let Admitting {
            request,
            host,
            path,
            client,
            tls,
            ..
        } = admitting;
        let origin = Origin {
            client,
            tls,
            host: &host,
            revoked,
            request_id,
            identity,
        };
        let path = upstream_path.unwrap_or(path);
        let sending = self.upstream.prepare(request, backend, &path, origin)?;
        Ok(Step::Ready(Ready::Send(sending)))
    }

    /// A browser without a session: off to the identity provider.
    async fn sign_in(
        &self,
        admitting: Admitting,
        route: Arc<Route>,
        request_id: HeaderValue,
    ) -> Result<Ready<'_>, Answer> {
        let return_to = admitting
            .request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let reserved = admitting.reserved("", std::slice::from_ref(&route), &request_id);
        self.start_login(&reserved, return_to)
            .await
            .map(Ready::Answered)
    }

    /// The proxy's own paths under `/_iap/`.
    async fn answer_reserved(
        &self,
        admitting: Admitting,
        table: Arc<RoutingTable>,
        request_id: HeaderValue,
    ) -> Result<Ready<'_>, Answer> {
        let query = admitting.request.uri().query().unwrap_or("");
        let routes = table.host_routes(&admitting.host);
        self.reserved(admitting.reserved(query, routes, &request_id))
            .await
            .map(Ready::Answered)
    }

    /// `/_iap/tunnel`: TCP over WebSocket, for programs with a bearer token (never cookies).
    async fn tunnel(
        &self,
        admitting: Admitting,
        route: Arc<Route>,
        request_id: HeaderValue,
    ) -> Result<Ready<'_>, Answer> {
        let sign_in = route.sign_in.as_ref().ok_or(Answer::Misconfigured(None))?;
        let (_, token) =
            bearer_token(admitting.request.headers()).ok_or(Answer::Unauthenticated)?;
        let (identity, expires_at) = self.bearer_identity(&sign_in.client, token).await?;
        let port = requested_port(admitting.request.uri().query().unwrap_or(""))?;
        let tunnel = TunnelRequest {
            host: admitting.host,
            port,
            identity,
            expires_at,
            client: admitting.client,
        };
        self.open_tunnel(admitting.request, tunnel, &request_id)
            .map(Ready::Answered)
    }
}

impl Proxy {
    /// The policy's rate limit, checked before any authentication work so a flood never reaches
    /// the identity provider or the keys.
    fn check_rate_limit(&self, route: &Route) -> Result<(), Answer> {
        route.rate_limit.check().map_err(|wait| {
            self.metrics
                .rate_limited
                .with_label_values(&[route.policy.as_str()])
                .inc();
            Answer::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }
}

/// Where a request stands once [`Proxy::admit`] has done what does not wait.
enum Step<'a> {
    Ready(Ready<'a>),
    /// A path that waits (a bearer token's first check, the proxy's own paths, the start of a
    /// sign-in, a tunnel); boxed, so that the common path's future does not carry its size.
    Wait(Pin<Box<dyn Future<Output = Result<Ready<'a>, Answer>> + Send + 'a>>),
}

/// A request decided on: answered by the proxy, or ready for its upstream.
// The large variant is the common one; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
enum Ready<'a> {
    Answered(Response<ProxyBody>),
    Send(Sending<'a>),
}

/// A routed request and what deciding on it needs, owned so that a path that waits can take it
/// into its boxed future.
struct Admitting {
    request: Request<RequestBody>,
    /// As the client sent it, port included (for redirect URIs).
    authority: String,
    /// Lower-case, without port.
    host: String,
    /// The normalised path: exactly what the policy matches and the backend gets.
    path: String,
    tls: bool,
    client: IpAddr,
    keys: Arc<KeyRing>,
    signing_keys: Arc<SigningKeys>,
    /// For `/_iap/secure_token_test`: how to break the assertion.
    breakage: Option<Breakage>,
}

impl Admitting {
    fn login(&self) -> LoginRequest<'_> {
        LoginRequest {
            host: &self.host,
            authority: &self.authority,
            tls: self.tls,
            keys: &self.keys,
        }
    }

    /// The request as the proxy's own paths (and the start of a sign-in) take it.
    fn reserved<'a>(
        &'a self,
        query: &'a str,
        routes: &'a [Arc<Route>],
        request_id: &'a HeaderValue,
    ) -> Reserved<'a> {
        Reserved {
            path: &self.path,
            query,
            headers: self.request.headers(),
            login: self.login(),
            routes,
            client: self.client,
            signing_keys: &self.signing_keys,
            request_id,
        }
    }

    /// Public paths are forwarded without identity, except when testing the assertion.
    fn is_public(&self, route: &Route) -> bool {
        route.access.is_public(&self.path) && self.breakage.is_none()
    }
}

/// The identity a request's credential (session cookie or bearer token) proved.
struct Credential {
    /// Shared with the cache it came from: a signed-in request copies no strings.
    identity: Arc<Identity>,
    /// When the credential ends (Unix seconds): an upgraded connection is closed then.
    expires_at: u64,
    /// Whether it came in `Authorization` (removed before forwarding unless the policy passes it).
    in_authorization: bool,
}

impl Credential {
    fn bearer(identity: Arc<Identity>, expires_at: u64, header: BearerHeader) -> Self {
        Credential {
            identity,
            expires_at,
            in_authorization: header == BearerHeader::Authorization,
        }
    }
}

/// What a request without identity, which the policy does not admit anonymously, gets.
enum Anonymous {
    Forward,
    SignIn,
    Deny(Answer),
}

fn anonymous<B>(route: &Route, request: &Request<B>) -> Anonymous {
    match decide(
        request.method(),
        request.headers(),
        route.access.allow_http_options,
    ) {
        Unauthenticated::ForwardPreflight => Anonymous::Forward,
        Unauthenticated::PreflightNeedsCredentials => {
            Anonymous::Deny(Answer::PreflightNeedsCredentials)
        }
        Unauthenticated::SignIn => Anonymous::SignIn,
        Unauthenticated::Unauthorized => Anonymous::Deny(Answer::Unauthenticated),
    }
}

/// The breakage `/_iap/secure_token_test?type=...` asks for.
fn secure_token_breakage(query: &str) -> Result<Breakage, Answer> {
    let kind = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "type")
        .map_or_else(|| "NOT_SET".to_string(), |(_, value)| value.into_owned());
    Breakage::parse(&kind).ok_or_else(|| {
        Answer::BadPath(format!(
            "unknown secure_token_test type {kind:?}; use NOT_SET, FUTURE_ISSUE, PAST_EXPIRATION, ISSUER, AUDIENCE or SIGNATURE"
        ))
    })
}

/// The authority a request is for, port included: the URI's (HTTP/2, absolute-form) or the
/// Host header. Only used once a route matched its host, so it names a served host.
fn request_authority<B>(request: &Request<B>) -> Option<&str> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str());
    }
    request
        .headers()
        .get(header::HOST)?
        .to_str()
        .ok()
        .filter(|host| !host.is_empty())
}
