//! The upstream connection pool of one worker: HTTP/1.1 connections per upstream address, reused
//! most-recent-first. A connection goes back to the pool when its response body has been read to
//! the end (by [`PooledBody`]), so reuse needs no extra task per request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::idle_pool::{self, IdlePool, Reusable};
use super::request_body::RequestBody;

/// Why a request did not get a response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0} timed out")]
    ConnectTimeout(Authority),
    #[error("cannot connect to {0}: {1}")]
    Connect(Authority, std::io::Error),
    #[error("HTTP exchange with the upstream failed: {0}")]
    Exchange(hyper::Error),
    #[error("exchange with the upstream failed: {0}")]
    Io(std::io::Error),
    #[error("the upstream broke HTTP/1.1: {0}")]
    Protocol(super::h1::ProtocolError),
    #[error("the upstream did not answer in time")]
    ResponseTimeout,
}

impl Reusable for SendRequest<RequestBody> {
    fn is_usable(&mut self) -> bool {
        !self.is_closed()
    }
}

pub struct UpstreamPool {
    idle: Arc<IdlePool<SendRequest<RequestBody>>>,
    connect_timeout: Duration,
}

impl UpstreamPool {
    /// Must be called inside the worker's runtime: the pool's sweeper runs there.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(UpstreamPool {
            idle: IdlePool::new(idle_timeout),
            connect_timeout,
        })
    }

    /// Sends `request` to `authority` on a pooled connection, or a new one. A pooled connection the
    /// upstream closed meanwhile is retried once on a fresh connection, since the request was
    /// never written to it.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut request = request;
        if let Some(mut sender) = self.checkout(authority).await {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.wrap(authority, sender, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Exchange(failed.into_error())),
                },
            }
        }
        // Boxed: connecting is rare, and its future would otherwise make every request's larger.
        let mut sender = Box::pin(self.connect(authority)).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(self.wrap(authority, sender, response))
    }

    async fn checkout(&self, authority: &Authority) -> Option<SendRequest<RequestBody>> {
        while let Some(mut sender) = self.idle.checkout(authority) {
            // Ready at once unless the connection is still finishing the last response.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let stream = idle_pool::connect(authority, self.connect_timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            // Upgrades (WebSocket) take the connection over; it then never returns to the pool.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn wrap(
        &self,
        authority: &Authority,
        sender: SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let release = reusable.then(|| Release {
            pool: self.idle.clone(),
            authority: authority.clone(),
            sender,
        });
        let release = if response.body().is_end_stream() {
            // Nothing more to read: the connection is free now.
            release.and_then(Release::give_back)
        } else {
            release
        };
        response.map(|inner| PooledBody { inner, release })
    }
}

struct Release {
    pool: Arc<IdlePool<SendRequest<RequestBody>>>,
    authority: Authority,
    sender: SendRequest<RequestBody>,
}

impl Release {
    /// Returns the connection to the pool; always `None`, to clear the caller's slot.
    fn give_back(self) -> Option<Release> {
        self.pool.give_back(self.authority, self.sender);
        None
    }
}

/// An upstream response body that returns its connection to the pool once read to the end. If it
/// is dropped early (the client went away), the connection is simply closed.
pub struct PooledBody {
    inner: Incoming,
    release: Option<Release>,
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release = self.release.take().and_then(Release::give_back),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.release = self.release.take().and_then(Release::give_back)
            }
            // An error leaves the connection in an unknown state: never reuse it.
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
