//! Test support: a kube-iap server on 127.0.0.1:0 fed from a temporary manifests folder, real
//! in-process backends, and a small HTTP client that can send any Host header.
#![allow(dead_code)] // not every helper is used by every scenario

pub mod backends;
pub mod browser;
pub mod certificates;
pub mod forging_idp;
pub mod grpc;
pub mod idp;
pub mod manifests;
pub mod node;
pub mod relay;
pub mod sessions;
pub mod testbed;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_iap::proxy::ProxyConfig;
use kube_iap::serve::{self, Running, ServeConfig};

/// Starts kube-iap on loopback with every listener on an ephemeral port.
pub async fn start_server(manifests: &Path) -> Running {
    start_server_with(
        manifests,
        ProxyConfig {
            access_log: false,
            ..ProxyConfig::default()
        },
    )
    .await
}

pub async fn start_server_with(manifests: &Path, proxy: ProxyConfig) -> Running {
    // `KUBE_IAP_TEST_LOG=1 cargo test …` shows the server's log when a test needs explaining.
    if std::env::var_os("KUBE_IAP_TEST_LOG").is_some() {
        kube_iap::telemetry::init(kube_iap::telemetry::LogFormat::Text);
    }
    let config = ServeConfig {
        source: serve::Source::Folder {
            dir: manifests.to_path_buf(),
            reload_interval: Duration::from_millis(50),
        },
        http_addr: Some(loopback()),
        https_addr: Some(loopback()),
        admin_addr: loopback(),
        session_keys_secret: None,
        proxy,
    };
    serve::start(config).await.expect("server starts")
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A response, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Identity headers a client might send to pass as someone else: mixed case, duplicated,
/// underscore spellings (which some backends read as dashes), Google's names. Every value says
/// "spoofed", so [`assert_no_spoofed_identity`] can tell that none reached the backend.
pub const SPOOFED_IDENTITY_HEADERS: &[(&str, &str)] = &[
    (
        "X-Kube-Iap-Authenticated-User-Email",
        "spoofed-1@example.com",
    ),
    (
        "x-kube-iap-authenticated-user-email",
        "spoofed-2@example.com",
    ),
    ("X-KUBE-IAP-AUTHENTICATED-USER-ID", "spoofed-id"),
    (
        "x_kube_iap_authenticated_user_email",
        "spoofed-3@example.com",
    ),
    ("X-Kube-Iap-Jwt-Assertion", "spoofed.assertion.x"),
    (
        "X-Goog-Authenticated-User-Email",
        "accounts.google.com:spoofed-4@example.com",
    ),
    (
        "x-goog-authenticated-user-email",
        "accounts.google.com:spoofed-5@example.com",
    ),
    ("x_goog_authenticated_user_id", "spoofed-goog-id"),
    ("X-Goog-IAP-JWT-Assertion", "spoofed.goog.assertion"),
];

/// The echo backend's view of the request headers holds none of [`SPOOFED_IDENTITY_HEADERS`].
pub fn assert_no_spoofed_identity(headers: &serde_json::Value) {
    let headers = headers.as_object().expect("the echo backend lists headers");
    assert!(!headers.is_empty());
    for (name, value) in headers {
        assert!(
            !value.to_string().contains("spoofed"),
            "{name}: {value} reached the backend"
        );
    }
}

/// The headers of a request that also carries every [`SPOOFED_IDENTITY_HEADERS`] entry.
pub fn with_spoofed_identity<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    SPOOFED_IDENTITY_HEADERS
        .iter()
        .copied()
        .chain(headers.iter().copied())
        .collect()
}

/// Sends `GET path` to `addr` with the given Host and extra headers.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, "GET", host, path, headers, Bytes::new()).await
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body)).expect("valid request"))
        .await
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Polls `check` until it returns true, for at most five seconds.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(5, what, check).await
}

/// Polls `check` until it returns true, for at most `seconds`.
pub async fn within<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {seconds} s waiting for {what}");
}

/// A WebSocket upgrade request for `uri` with the Host `host` and extra headers.
pub fn websocket_request(uri: &str, host: &str, extra: &[(&str, String)]) -> Request<()> {
    let mut request = Request::get(uri)
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        );
    for (name, value) in extra {
        request = request.header(*name, value.as_str());
    }
    request.body(()).expect("a valid upgrade request")
}
