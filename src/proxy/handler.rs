//! The per-request path: route → strip → reserved paths → admit → forward, each a small step. The
//! table snapshot is read once, at the start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::request_body::RequestBody;
use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::forward::Origin;
use super::headers::strip_identity_headers;
use super::headers::{client_address, client_used_tls, is_upgrade_request};
use super::pages::{self, Answer};
use super::reserved::Reserved;
use super::tunnel::{TUNNEL_PATH, TunnelRequest, requested_port};
use super::{Proxy, ProxyBody};
use crate::auth::assertion::Breakage;
use crate::auth::bearer::{BearerHeader, bearer_token};
use crate::auth::cookies::strip_proxy_cookies;
use crate::auth::decision::{Unauthenticated, decide};
use crate::auth::login::LoginRequest;
use crate::auth::session::unix_now;
use crate::model::path;
use crate::model::{Decision, RequestFacts};
use crate::model::{Identity, canonical_host};
use crate::model::{Route, RouteAction};

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
    pub async fn handle(
        &self,
        request: Request<RequestBody>,
        connection: Connection,
    ) -> Response<ProxyBody> {
        // Only the access log reads the whole request's latency.
        let started = self.config.access_log.then(Instant::now);
        let request_id = self.request_ids.next();
        let request_id_text = request_id.to_str().unwrap_or("-");
        let method = request.method().clone();
        let html = pages::wants_html(request.headers());
        let mut outcome = Outcome::default();
        let response = match self
            .route_and_forward(request, connection, &request_id, &mut outcome)
            .await
        {
            Ok(response) => response,
            Err(answer) => pages::respond(&answer, html, &request_id),
        };
        let status = response.status().as_u16();
        self.route_metrics.record(
            &self.metrics,
            outcome.route_name(),
            response.status(),
            outcome.upstream_seconds,
        );
        if let Some(started) = started {
            tracing::info!(
                target: "kube_iap::access",
                request_id = request_id_text,
                peer = %connection.peer,
                method = %method,
                host = %outcome.host,
                path = %outcome.path,
                status,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                route = outcome.route_name(),
            );
        }
        response
    }

    async fn route_and_forward(
        &self,
        request: Request<RequestBody>,
        connection: Connection,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, Answer> {
        // Two steps, so that everything deciding about the request is gone by the time it is
        // forwarded: a future keeps every variable in scope at an await, and the request's
        // future is copied on its way up, so its size is paid on every request.
        let forwarding = match self.admit(request, connection, request_id, outcome).await? {
            Admitted::Answered(response) => return Ok(response),
            Admitted::Forward(forwarding) => forwarding,
        };
        let Forwarding {
            request,
            backend,
            path,
            host,
            client,
            tls,
            revoked,
        } = forwarding;
        let upstream = backend.pick().ok_or(Answer::NoHealthyUpstream)?;
        let started = Instant::now();
        let response = self
            .upstream
            .forward(
                request,
                upstream,
                &path,
                Origin {
                    client,
                    tls,
                    host: &host,
                    revoked,
                },
            )
            .await;
        outcome.upstream_seconds = Some(started.elapsed().as_secs_f64());
        response
    }

    /// Routes, authenticates and authorizes: either the answer, or the request ready to forward.
    async fn admit(
        &self,
        mut request: Request<RequestBody>,
        connection: Connection,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Admitted, Answer> {
        let authority = request_authority(&request)
            .ok_or(Answer::MissingHost)?
            .to_string();
        let host = canonical_host(&authority).into_owned();
        let normalized = path::normalize(request.uri().path())
            .map_err(|error| Answer::BadPath(error.to_string()))?;
        if self.config.access_log {
            outcome.host.clone_from(&host);
            outcome.path.clone_from(&normalized);
        }

        strip_identity_headers(request.headers_mut());
        // The snapshot is read once; what is needed is kept, the guard is not held across awaits.
        let table = self.table.load_full();
        let keys = table
            .session_keys
            .clone()
            .unwrap_or_else(|| self.fallback_keys.clone());
        let tls = client_used_tls(
            connection.tls,
            connection.peer.ip(),
            request.headers(),
            &self.config.trusted_proxies,
        );
        let login = LoginRequest {
            host: &host,
            authority: &authority,
            tls,
            keys: &keys,
        };
        let breakage = match normalized == SECURE_TOKEN_TEST {
            true => Some(secure_token_breakage(request.uri().query().unwrap_or(""))?),
            false => None,
        };
        let client = client_address(
            connection.peer.ip(),
            request.headers(),
            &self.config.trusted_proxies,
        );
        let signing_keys = table
            .signing_keys
            .clone()
            .unwrap_or_else(|| self.fallback_signing_keys.clone());
        if normalized == TUNNEL_PATH {
            let route = table
                .host_routes(&host)
                .first()
                .cloned()
                .ok_or(Answer::NoRoute)?;
            outcome.route = Some(route.clone());
            self.check_rate_limit(&route)?;
            let sign_in = route.sign_in.as_ref().ok_or(Answer::Misconfigured(None))?;
            // Tunnels are for programs: a bearer token, never cookies.
            let (_, token) = bearer_token(request.headers()).ok_or(Answer::Unauthenticated)?;
            let (identity, expires_at) =
                Box::pin(self.bearer_identity(&sign_in.client, token)).await?;
            let port = requested_port(request.uri().query().unwrap_or(""))?;
            let tunnel = TunnelRequest {
                host: host.clone(),
                port,
                identity,
                expires_at,
                client,
            };
            return self
                .open_tunnel(request, tunnel, request_id)
                .map(Admitted::Answered);
        }
        if normalized.starts_with(RESERVED_PREFIX) && breakage.is_none() {
            let routes = table.host_routes(&host);
            if routes.is_empty() {
                return Err(Answer::NoRoute);
            }
            outcome.route = Some(routes[0].clone());
            return Box::pin(self.reserved(Reserved {
                path: &normalized,
                query: request.uri().query().unwrap_or(""),
                headers: request.headers(),
                login,
                routes,
                client,
                signing_keys: &signing_keys,
                request_id,
            }))
            .await
            .map(Admitted::Answered);
        }
        let route = table
            .route(&host, &normalized)
            .cloned()
            .ok_or(Answer::NoRoute)?;
        outcome.route = Some(route.clone());
        self.check_rate_limit(&route)?;
        let backend = match &route.action {
            RouteAction::FailClosed { code, reason } => {
                tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), route = %route.policy, reason = %reason, "route fails closed");
                return Err(Answer::Misconfigured(*code));
            }
            RouteAction::Forward(backend) => backend.clone(),
        };

        let now = unix_now();
        let facts = RequestFacts {
            path: &normalized,
            method: request.method().as_str(),
            client,
            now: i64::try_from(now).unwrap_or(i64::MAX),
        };
        // Public paths carry no identity at all, even for a signed-in user. A bearer token, when
        // present, decides alone: an invalid one is refused, never passed over for cookies.
        let mut authenticated_with_authorization = false;
        let identity = if route.access.is_public(&normalized) && breakage.is_none() {
            None
        } else if let Some((header, token)) = bearer_token(request.headers()) {
            let sign_in = route.sign_in.as_ref().ok_or(Answer::Misconfigured(None))?;
            let (identity, expires_at) =
                Box::pin(self.bearer_identity(&sign_in.client, token)).await?;
            authenticated_with_authorization = header == BearerHeader::Authorization;
            Some((identity, expires_at))
        } else {
            self.sessions
                .session_from(request.headers(), &host, &keys, now)
                .map(|session| {
                    let expires_at = session.expires_at;
                    (Identity::from(session), expires_at)
                })
        };
        let (identity, credential_expires_at) = match identity {
            Some((identity, expires_at)) => (Some(identity), expires_at),
            None => (None, 0),
        };
        let public = route.access.is_public(&normalized) && breakage.is_none();
        match (&identity, route.access.evaluate(identity.as_ref(), &facts)) {
            (_, Decision::Allow(_)) => {}
            _ if public => {}
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
            (None, Decision::Deny(_)) => match admit(&route, &request) {
                Admission::Forward => {}
                Admission::Deny(answer) => return Err(answer),
                Admission::SignIn => {
                    let return_to = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |target| target.as_str());
                    let reserved = Reserved {
                        path: &normalized,
                        query: "",
                        headers: request.headers(),
                        login,
                        routes: std::slice::from_ref(&route),
                        client,
                        signing_keys: &signing_keys,
                        request_id,
                    };
                    return Box::pin(self.start_login(&reserved, return_to))
                        .await
                        .map(Admitted::Answered);
                }
            },
        }
        // The credential used to reach the proxy is the proxy's, not the backend's.
        strip_proxy_cookies(request.headers_mut());
        request.headers_mut().remove(header::PROXY_AUTHORIZATION);
        if authenticated_with_authorization && !route.backend_identity.pass_authorization {
            request.headers_mut().remove(header::AUTHORIZATION);
        }
        if let Some(identity) = &identity {
            self.set_identity_headers(
                request.headers_mut(),
                identity,
                &route.backend_identity,
                &signing_keys,
                breakage.unwrap_or(Breakage::None),
            );
        }

        request
            .headers_mut()
            .insert(super::request_id::X_REQUEST_ID, request_id.clone());
        let revoked = match &identity {
            Some(identity) if is_upgrade_request(request.headers()) => Some(self.watch_access(
                &host,
                &normalized,
                request.method().as_str(),
                client,
                identity.clone(),
                credential_expires_at,
            )),
            _ => None,
        };
        Ok(Admitted::Forward(Forwarding {
            request,
            backend,
            path: normalized,
            host,
            client,
            tls,
            revoked,
        }))
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

/// The outcome of [`Proxy::admit`].
// The large variant is the common one; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
enum Admitted {
    Answered(Response<ProxyBody>),
    Forward(Forwarding),
}

/// A request that may go to its route's backend, with what forwarding it needs.
struct Forwarding {
    request: Request<RequestBody>,
    backend: Arc<crate::model::Backend>,
    /// The normalised path: exactly what the policy matched.
    path: String,
    host: String,
    client: std::net::IpAddr,
    tls: bool,
    revoked: Option<super::forward::Revocation>,
}

/// What a request without identity, which the policy does not admit anonymously, gets.
enum Admission {
    Forward,
    SignIn,
    Deny(Answer),
}

fn admit<B>(route: &Route, request: &Request<B>) -> Admission {
    match decide(
        request.method(),
        request.headers(),
        route.access.allow_http_options,
    ) {
        Unauthenticated::ForwardPreflight => Admission::Forward,
        Unauthenticated::PreflightNeedsCredentials => {
            Admission::Deny(Answer::PreflightNeedsCredentials)
        }
        Unauthenticated::SignIn => Admission::SignIn,
        Unauthenticated::Unauthorized => Admission::Deny(Answer::Unauthenticated),
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
