//! Upstream connections over cleartext HTTP/2 with prior knowledge (h2c), for backends that
//! speak gRPC (a GRPCRoute's). HTTP/2 carries any number of requests at once on one connection,
//! so each worker keeps one connection per upstream address and opens another only once that
//! one has closed.

use std::sync::Mutex;
use std::time::Duration;

use foldhash::HashMap;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::idle_pool;
use super::request_body::RequestBody;
use super::upstream::UpstreamError;

/// How often a connection is pinged, idle or not, so one the upstream dropped silently is
/// noticed (and replaced) before a request is sent on it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as gone.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct H2cPool {
    connections: Mutex<HashMap<Authority, SendRequest<RequestBody>>>,
    connect_timeout: Duration,
}

impl H2cPool {
    pub fn new(connect_timeout: Duration) -> Self {
        H2cPool {
            connections: Mutex::default(),
            connect_timeout,
        }
    }

    /// Sends `request` (its URI absolute, for the `:scheme` and `:authority` of HTTP/2) to
    /// `authority` on its open connection, or a new one. A request the open connection
    /// refused unsent (it was closing) is sent again on a new connection.
    pub async fn send(
        &self,
        authority: &Authority,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = request;
        if let Some(mut sender) = self.open(authority) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(response),
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(UpstreamError::Exchange(failed.into_error())),
                    },
                }
            }
        }
        let mut sender = Box::pin(self.connect(authority)).await?;
        sender.ready().await.map_err(UpstreamError::Exchange)?;
        sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Exchange)
    }

    fn open(&self, authority: &Authority) -> Option<SendRequest<RequestBody>> {
        let mut connections = self
            .connections
            .lock()
            .expect("the h2c pool lock is never poisoned");
        match connections.get(authority) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                connections.remove(authority);
                None
            }
            None => None,
        }
    }

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let stream = idle_pool::connect(authority, self.connect_timeout).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "h2c upstream connection ended with an error");
            }
        });
        self.connections
            .lock()
            .expect("the h2c pool lock is never poisoned")
            .insert(authority.clone(), sender.clone());
        Ok(sender)
    }
}
