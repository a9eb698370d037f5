//! Forwarding to the upstream: pooled connections, streamed bodies, WebSocket upgrades.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper_util::rt::TokioIo;

use super::h1::{self, H1Pool};
use super::headers::{self, ForwardingFields};
use super::identity::IdentityFields;
use super::pages::Answer;
use super::request_body::RequestBody;
use super::upstream::{UpstreamError, UpstreamPool};
use super::{BoxError, ProxyBody, ProxyConfig};
use crate::model::{Backend, NoUpstream, Upstream};

pub struct UpstreamClient {
    /// Requests with a body, and upgrades.
    pool: Arc<UpstreamPool>,
    /// Requests without a body.
    lean: Arc<H1Pool>,
    /// Upstreams that speak cleartext HTTP/2 (gRPC).
    h2c: super::h2c::H2cPool,
    response_timeout: std::time::Duration,
}

/// Where the request came from, for the forwarding headers.
pub struct Origin<'a> {
    pub client: IpAddr,
    pub tls: bool,
    pub host: &'a str,
    /// For an authenticated upgrade: when to close it.
    pub revoked: Option<Revocation>,
    pub request_id: &'a HeaderValue,
    /// Who is calling, when someone signed in.
    pub identity: Option<IdentityFields<'a>>,
}

/// A request ready for its upstream: [`UpstreamClient::prepare`] did everything that does not
/// wait, so that what is left to await is small (a future keeps what is in scope at its awaits,
/// and the request's future is moved on its way up: its size is paid on every request).
pub enum Sending<'a> {
    /// Bodiless, its head already written out: the lean client sends it on a pooled connection.
    Lean {
        pool: &'a H1Pool,
        backend: Arc<Backend>,
        /// Which of the backend's upstreams.
        upstream: usize,
        method: Method,
        head: Vec<u8>,
    },
    /// A body to stream, or an upgrade: hyper's client, boxed (its future is about a kilobyte).
    Hyper(Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Answer>> + Send + 'a>>),
}

impl Sending<'_> {
    /// Sends the request; the upstream's response, or the page that says why there is none.
    // Not an `async fn`: that would move `self` from the future's arguments into a local of its
    // own, and the future would hold both copies.
    #[allow(clippy::manual_async_fn)]
    pub fn send(mut self) -> impl Future<Output = Result<Response<ProxyBody>, Answer>> + Send {
        // Fields are used in place, not moved out, for the same reason.
        async move {
            match &mut self {
                Sending::Lean {
                    pool,
                    backend,
                    upstream,
                    method,
                    head,
                } => {
                    let upstream = &backend.upstreams[*upstream];
                    // The lean client keeps the response timeout itself, with a timer per
                    // connection.
                    let sent = pool.send(&upstream.authority, head, method).await;
                    Ok(relayed(answer_of(sent, upstream)?))
                }
                Sending::Hyper(sending) => sending.as_mut().await,
            }
        }
    }
}

impl UpstreamClient {
    pub fn new(config: &ProxyConfig) -> Self {
        UpstreamClient {
            pool: UpstreamPool::new(config.connect_timeout, config.pool_idle_timeout),
            lean: H1Pool::new(
                config.connect_timeout,
                config.pool_idle_timeout,
                config.response_timeout,
            ),
            h2c: super::h2c::H2cPool::new(config.connect_timeout),
            response_timeout: config.response_timeout,
        }
    }

    /// Readies `request` for one of `backend`'s upstreams with `path` (already normalised) and
    /// the original query: the forwarding headers set, the hop-by-hop ones gone.
    pub fn prepare(
        &self,
        mut request: Request<RequestBody>,
        backend: Arc<Backend>,
        path: &str,
        mut origin: Origin<'_>,
    ) -> Result<Sending<'_>, Answer> {
        let upstream = backend.pick_index().map_err(|missing| match missing {
            NoUpstream::NoEndpoints => Answer::NoHealthyUpstream,
            // The spec's answer for requests sent to a backendRef that does not resolve.
            NoUpstream::Invalid => Answer::Misconfigured(None),
        })?;
        let upgrade =
            headers::is_upgrade_request(request.headers()) && request.version() == Version::HTTP_11;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        // Origin-form: the pool already knows which upstream the connection goes to.
        let uri = origin_form(request.uri(), path)
            .ok_or_else(|| Answer::BadPath("unencodable".into()))?;

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        // HTTP/2 clients send no Host header; the backend must still see the host they asked for.
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(origin.host) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let fields = ForwardingFields {
            client: origin.client,
            tls: origin.tls,
            host: origin.host,
            request_id: origin.request_id,
            identity: origin.identity.as_ref(),
        };
        if backend.h2c {
            return self.prepare_h2c(parts, body, backend, upstream, &fields);
        }
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);

        if !upgrade && body.is_end_stream() {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let size: usize = parts
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum();
            let mut head = h1::RequestHead::new(&parts.method, target, size + fields.size());
            for (name, value) in &parts.headers {
                if !ForwardingFields::replaces(name) {
                    head.field(name, value.as_bytes());
                }
            }
            fields.for_each(|name, value| head.field(name, value));
            return Ok(Sending::Lean {
                pool: &self.lean,
                upstream,
                backend,
                method: parts.method,
                head: head.finish(),
            });
        }
        fields.set(&mut parts.headers);

        let revoked = origin.revoked.take();
        let request = Request::from_parts(parts, body);
        Ok(Sending::Hyper(Box::pin(async move {
            let upstream = &backend.upstreams[upstream];
            let sent = tokio::time::timeout(
                self.response_timeout,
                self.pool.send(&upstream.authority, request),
            )
            .await
            .unwrap_or(Err(UpstreamError::ResponseTimeout));
            let mut response = answer_of(sent, upstream)?;

            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    let upstream_upgrade = hyper::upgrade::on(&mut response);
                    tokio::spawn(relay_upgraded(client_upgrade, upstream_upgrade, revoked));
                    let (parts, body) = response.into_parts();
                    return Ok(Response::from_parts(
                        parts,
                        body.map_err(BoxError::from).boxed(),
                    ));
                }
            }
            Ok(relayed(response))
        })))
    }
}

impl UpstreamClient {
    /// Readies a request for an upstream that speaks cleartext HTTP/2 (gRPC): the URI made
    /// absolute (HTTP/2 sends scheme and authority as fields of their own, not a Host header),
    /// and `te: trailers` kept, which gRPC requires and HTTP/2 allows.
    fn prepare_h2c(
        &self,
        mut parts: http::request::Parts,
        body: RequestBody,
        backend: Arc<Backend>,
        upstream: usize,
        fields: &ForwardingFields<'_>,
    ) -> Result<Sending<'_>, Answer> {
        let trailers = headers::accepts_trailers(&parts.headers);
        let authority = parts
            .headers
            .remove(header::HOST)
            .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
            .unwrap_or_else(|| backend.upstreams[upstream].authority.clone());
        let path_and_query = parts.uri.path_and_query().cloned();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = path_and_query;
        parts.uri = Uri::from_parts(uri).map_err(|_| Answer::BadPath("unencodable".into()))?;
        parts.version = Version::HTTP_2;
        headers::strip_hop_by_hop(&mut parts.headers, false);
        if trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        fields.set(&mut parts.headers);
        let request = Request::from_parts(parts, body);
        Ok(Sending::Hyper(Box::pin(async move {
            let upstream = &backend.upstreams[upstream];
            let sent = tokio::time::timeout(
                self.response_timeout,
                self.h2c.send(&upstream.authority, request),
            )
            .await
            .unwrap_or(Err(UpstreamError::ResponseTimeout));
            Ok(relayed(answer_of(sent, upstream)?))
        })))
    }
}

/// The upstream's response as the client gets it: without the upstream hop's own headers.
fn relayed<B>(response: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

/// The upstream's response, or the page that says why there is none.
fn answer_of<B>(
    sent: Result<Response<B>, UpstreamError>,
    upstream: &Upstream,
) -> Result<Response<B>, Answer> {
    sent.map_err(|error| {
        tracing::debug!(upstream = %upstream.authority, %error, "upstream request failed");
        match error {
            UpstreamError::ConnectTimeout(_) | UpstreamError::ResponseTimeout => {
                Answer::UpstreamTimeout
            }
            _ => Answer::UpstreamUnavailable,
        }
    })
}

/// `path` (normalised) plus the original query. When normalisation changed nothing, the request's
/// own path-and-query is reused rather than rebuilt.
fn origin_form(original: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match original.path_and_query() {
        Some(pq) if pq.path() == path => pq.clone(),
        _ => {
            let text = match original.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            };
            PathAndQuery::try_from(text).ok()?
        }
    };
    Some(Uri::from(path_and_query))
}

/// Resolves when an upgraded connection must end (access revoked, credential expired), with why.
pub type Revocation = std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>;

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// closes, or until `revoked` says the caller may no longer be connected.
async fn relay_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    revoked: Option<Revocation>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let revoked = revoked.unwrap_or_else(|| Box::pin(std::future::pending()));
    tokio::select! {
        copied = copy => if let Err(error) = copied {
            tracing::debug!(%error, "upgraded connection ended with an error");
        },
        reason = revoked => tracing::info!(reason, "upgraded connection closed"),
    }
}
