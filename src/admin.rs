//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status`. It is meant for the cluster
//! network (probes, Prometheus), never for end users, so it listens on its own port.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::assertion::{Jwks, SigningKeys};
use crate::auth::providers::Providers;
use crate::metrics::Metrics;
use crate::publish::Published;

pub struct Admin {
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub providers: Arc<Providers>,
    pub jwks: Arc<Jwks>,
    pub fallback_signing_keys: Arc<SigningKeys>,
}

impl Admin {
    pub fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.published.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n"),
            "/metrics" => {
                let mut response = text(StatusCode::OK, &self.metrics.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/status" => {
                let report = self.published.report.load();
                let findings = self.published.provider_findings(&self.providers);
                let body = serde_json::to_string_pretty(&report.view(&findings))
                    .expect("the status report serializes");
                let mut response = text(StatusCode::OK, &body);
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            "/jwks.json" => {
                let keys = self
                    .published
                    .table
                    .load()
                    .signing_keys
                    .clone()
                    .unwrap_or_else(|| self.fallback_signing_keys.clone());
                let mut response = text(StatusCode::OK, &self.jwks.document(&keys).to_string());
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz, /metrics, /status or /jwks.json\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::until_stopped(&mut shutdown) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = admin.answer(&request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
