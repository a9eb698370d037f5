//! Accept loops for the plain and TLS listeners. Each connection speaks HTTP/1.1 or HTTP/2 (by
//! ALPN on TLS, by preface on plain) and may upgrade (WebSocket).

use std::net::SocketAddr;
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
use super::handler::Connection;
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
        let tls = tls.clone();
        worker.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    return tracing::debug!(%peer, %error, "cannot register the connection");
                }
            };
            let Some(acceptor) = tls else {
                return serve_connection(stream, peer, false, proxy, watcher).await;
            };
            let handshake =
                tokio::time::timeout(proxy.config.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => serve_connection(stream, peer, true, proxy, watcher).await,
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

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    proxy: Arc<Proxy>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Connection { peer, tls };
    let header_read_timeout = proxy.config.header_read_timeout;
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, connection).await) }
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
