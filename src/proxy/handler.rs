//! The per-request path: route → strip → reserved paths → admit → forward, each a small step. The
//! table snapshot is read once, at the start.

use std::net::SocketAddr;
use std::time::Instant;

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use super::forward::Origin;
use super::headers::strip_identity_headers;
use super::pages::{self, Answer};
use super::{Proxy, ProxyBody};
use crate::model::path;
use crate::model::{Route, RouteAction};

/// Prefix of the paths kube-iap answers itself on every host.
pub const RESERVED_PREFIX: &str = "/_iap/";

/// What the server knows about the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Facts about a handled request for the access log and metrics; never a header value or query.
struct Outcome {
    route: String,
    host: String,
    path: String,
}

impl Proxy {
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: Connection,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = self.request_ids.next();
        let method = request.method().clone();
        let html = pages::wants_html(request.headers());
        let mut outcome = Outcome {
            route: "-".to_string(),
            host: String::new(),
            path: String::new(),
        };
        let response = match self
            .route_and_forward(request, connection, &request_id, &mut outcome)
            .await
        {
            Ok(response) => response,
            Err(answer) => pages::respond(&answer, html, &request_id),
        };
        let status = response.status().as_u16();
        self.metrics
            .requests
            .with_label_values(&[outcome.route.as_str(), response.status().as_str()])
            .inc();
        if self.config.access_log {
            tracing::info!(
                target: "kube_iap::access",
                request_id,
                peer = %connection.peer,
                method = %method,
                host = %outcome.host,
                path = %outcome.path,
                status,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                route = %outcome.route,
            );
        }
        response
    }

    async fn route_and_forward(
        &self,
        mut request: Request<Incoming>,
        connection: Connection,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, Answer> {
        let host = request_host(&request)
            .ok_or(Answer::MissingHost)?
            .to_string();
        let normalized = path::normalize(request.uri().path())
            .map_err(|error| Answer::BadPath(error.to_string()))?;
        outcome.path.clone_from(&normalized);

        let table = self.table.load();
        let route = table.route(&host, &normalized).ok_or(Answer::NoRoute)?;
        outcome.route.clone_from(&route.policy);

        strip_identity_headers(request.headers_mut());
        if normalized.starts_with(RESERVED_PREFIX) {
            return Err(Answer::UnknownReservedPath);
        }
        let backend = match &route.action {
            RouteAction::FailClosed { code, reason } => {
                tracing::warn!(request_id, route = %route.policy, reason = %reason, "route fails closed");
                return Err(Answer::Misconfigured(*code));
            }
            RouteAction::Forward(backend) => backend,
        };
        admit(route, &normalized)?;

        let upstream = backend.pick().ok_or(Answer::NoHealthyUpstream)?;
        if let Ok(id) = http::HeaderValue::from_str(request_id) {
            request.headers_mut().insert("x-request-id", id);
        }
        let origin = Origin {
            client: connection.peer.ip(),
            tls: connection.tls,
            host: &host,
        };
        let started = Instant::now();
        let response = self
            .upstream
            .forward(request, upstream, &normalized, origin)
            .await;
        self.metrics
            .upstream_latency
            .with_label_values(&[route.policy.as_str()])
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// Until authentication lands, only routes open to `allUsers` (or public paths) admit anyone;
/// every other route fails closed with 401.
fn admit(route: &Route, path: &str) -> Result<(), Answer> {
    if route.access.admits_anonymous(path) {
        Ok(())
    } else {
        Err(Answer::Unauthenticated)
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form) or the Host header.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.host());
    }
    request
        .headers()
        .get(header::HOST)?
        .to_str()
        .ok()
        .filter(|host| !host.is_empty())
}
