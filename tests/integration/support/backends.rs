//! Real backends on 127.0.0.1:0: an HTTP echo server and a WebSocket echo server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves HTTP on 127.0.0.1:0, answering each request with `respond(peer, request)`, and counts
/// the connections open right now in `open`.
pub async fn serve_http<F, Fut>(respond: F, open: Arc<AtomicUsize>) -> SocketAddr
where
    F: Fn(SocketAddr, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, hyper::Error>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            let open = open.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(peer, request));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

/// An HTTP backend that answers every request with JSON describing it: `name`, method, path,
/// query, headers and the connection's peer. `POST /count` reads the body as a stream and answers
/// its length.
pub async fn echo(name: &'static str) -> SocketAddr {
    echo_counting(name).await.0
}

/// [`echo`], also returning how many connections to it are open right now.
pub async fn echo_counting(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let open = Arc::new(AtomicUsize::new(0));
    let addr = serve_http(
        move |peer, request| answer(name, peer, request),
        open.clone(),
    )
    .await;
    (addr, open)
}

async fn answer(
    name: &str,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, mut body) = request.into_parts();
    let mut received: u64 = 0;
    // Count frame by frame; the body is never held in memory.
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received += data.len() as u64;
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|key| {
            let values: Vec<_> = parts
                .headers
                .get_all(key)
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .collect();
            (key.to_string(), serde_json::Value::from(values.join(", ")))
        })
        .collect();
    let reply = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "bodyBytes": received,
        "peer": peer.to_string(),
    });
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("valid"));
    response.headers_mut().insert(
        "set-cookie",
        "app_session=kept; Path=/".parse().expect("valid"),
    );
    if parts.headers.contains_key("x-test-close") {
        response
            .headers_mut()
            .insert("connection", "close".parse().expect("valid"));
    }
    Ok(response)
}

/// A WebSocket backend that echoes every message back, prefixed with `echo:`.
pub async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ws backend");
    let addr = listener.local_addr().expect("ws backend address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() {
                        let text = format!("echo:{}", message.to_text().unwrap_or_default());
                        if socket.send(text.into()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A port on which nothing listens.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").port()
}

/// A backend that signals `arrived` when a request reaches it and answers only once `release`
/// is notified, for requests in flight.
pub struct Gated {
    pub addr: SocketAddr,
    pub arrived: std::sync::Arc<tokio::sync::Notify>,
    pub release: std::sync::Arc<tokio::sync::Notify>,
}

pub async fn gated(name: &'static str) -> Gated {
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (arrive, gate) = (arrived.clone(), release.clone());
    let addr = serve_http(
        move |peer, request| {
            let (arrive, gate) = (arrive.clone(), gate.clone());
            async move {
                // notify_one keeps a permit, so neither side can miss the other.
                arrive.notify_one();
                gate.notified().await;
                answer(name, peer, request).await
            }
        },
        Arc::default(),
    )
    .await;
    Gated {
        addr,
        arrived,
        release,
    }
}
