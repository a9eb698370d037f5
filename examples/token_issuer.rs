//! A minimal OpenID issuer for benchmarks: serves a discovery document and an ES256 key set on
//! ADDR, and prints one ID token (valid for a day) on stdout for AUDIENCE. Never for production.
//!
//! `cargo run --release --example token_issuer -- 127.0.0.1:18084 AUDIENCE`

#[path = "../bench/support/es256.rs"]
mod es256;

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, audience] = args.as_slice() else {
        anyhow::bail!("usage: token_issuer ADDR AUDIENCE");
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let pair = es256::key();
    println!(
        "{}",
        es256::mint(&pair, &es256::claims(&issuer, audience, 86_400))
    );
    std::io::stdout().flush()?;
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
    .to_string();
    let documents = Arc::new((discovery, es256::jwks(&pair).to_string()));
    loop {
        let (stream, _) = listener.accept().await?;
        let documents = documents.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let body = match request.uri().path() {
                    "/jwks" => documents.1.clone(),
                    _ => documents.0.clone(),
                };
                async move {
                    let mut response = http::Response::new(Full::new(Bytes::from(body)));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().expect("valid"));
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
