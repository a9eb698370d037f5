//! Forwarding to the upstream: pooled connections, streamed bodies, WebSocket upgrades.

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::headers;
use super::pages::Answer;
use super::{ProxyBody, ProxyConfig};
use crate::model::Upstream;

pub struct UpstreamClient {
    client: Client<HttpConnector, Incoming>,
    response_timeout: std::time::Duration,
}

/// Where the request came from, for the forwarding headers.
pub struct Origin<'a> {
    pub client: IpAddr,
    pub tls: bool,
    pub host: &'a str,
}

impl UpstreamClient {
    pub fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        UpstreamClient {
            client,
            response_timeout: config.response_timeout,
        }
    }

    /// Sends `request` to `upstream` with `path` (already normalised) and the original query.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        upstream: &Upstream,
        path: &str,
        origin: Origin<'_>,
    ) -> Result<Response<ProxyBody>, Answer> {
        let upgrade =
            headers::is_upgrade_request(request.headers()) && request.version() == Version::HTTP_11;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(upstream.authority.clone())
            .path_and_query(
                PathAndQuery::try_from(path_and_query)
                    .map_err(|_| Answer::BadPath("unencodable".into()))?,
            )
            .build()
            .map_err(|_| Answer::BadPath("unencodable".into()))?;

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        // HTTP/2 clients send no Host header; the backend must still see the host they asked for.
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(origin.host) {
                parts.headers.insert(header::HOST, host);
            }
        }
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::set_forwarding_headers(&mut parts.headers, origin.client, origin.tls, origin.host);

        let sent = tokio::time::timeout(
            self.response_timeout,
            self.client.request(Request::from_parts(parts, body)),
        );
        let mut response = match sent.await {
            Err(_) => return Err(Answer::UpstreamTimeout),
            Ok(Err(error)) => {
                tracing::debug!(upstream = %upstream.authority, error = %error, "upstream request failed");
                return Err(Answer::UpstreamUnavailable);
            }
            Ok(Ok(response)) => response,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(relay_upgraded(client_upgrade, upstream_upgrade));
                let (parts, body) = response.into_parts();
                return Ok(Response::from_parts(parts, body.boxed()));
            }
        }
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, false);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until either closes.
async fn relay_upgraded(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}
