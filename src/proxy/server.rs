//! Accept loops for the plain and TLS listeners. Each connection speaks HTTP/1.1 or HTTP/2 (by
//! ALPN on TLS, by preface on plain) and may upgrade (WebSocket). HTTP/1.1 connections start on
//! the lean server (`h1::server`), which hands them to hyper's at the first request it leaves.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::Proxy;
use super::h1;
use super::handler::Connection;
use super::request_body::RequestBody;
use super::workers::Workers;

/// How long open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves plain HTTP until `shutdown` turns true.
pub async fn serve_plain(
    listener: TcpListener,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, workers, shutdown, None).await
}

/// Serves HTTPS until `shutdown` turns true.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, workers, shutdown, Some(TlsAcceptor::from(tls))).await
}

async fn accept_loop(
    listener: TcpListener,
    workers: Arc<Workers>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::until_stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        // Re-registered on the worker's own reactor below, so its readiness never wakes this thread.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let (worker, proxy) = workers.pick();
        let proxy = proxy.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        worker.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    return tracing::debug!(%peer, %error, "cannot register the connection");
                }
            };
            let Some(acceptor) = tls else {
                let connection = Connection { peer, tls: false };
                return h1::server::serve(stream, connection, proxy, shutdown, watcher).await;
            };
            let handshake =
                tokio::time::timeout(proxy.config.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let connection = Connection { peer, tls: true };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_with_hyper(stream, connection, proxy, watcher).await
                    } else {
                        h1::server::serve(stream, connection, proxy, shutdown, watcher).await
                    }
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Serves the connection with hyper's server: HTTP/2, and HTTP/1.1 from the first request the
/// lean server leaves to hyper on.
pub(super) async fn serve_with_hyper<S>(
    stream: S,
    connection: Connection,
    proxy: Arc<Proxy>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = connection.peer;
    let header_read_timeout = proxy.config.header_read_timeout;
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move {
            let request = request.map(RequestBody::Hyper);
            Ok::<_, std::convert::Infallible>(proxy.handle(request, connection).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(served.into_owned()).await {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }
}
