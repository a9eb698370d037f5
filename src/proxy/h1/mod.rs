//! A lean HTTP/1.1 upstream client for requests without a body, the great majority of proxied
//! requests (GET, HEAD, DELETE...). The request's task writes the head and reads the response on
//! the pooled connection itself, and the response body reads straight from the socket while the
//! client connection pulls it. hyper's client gives each connection a task of its own and
//! passes every request and body chunk through channels to it: about a third of the proxy's
//! instructions per request (`bench/cost.sh`). Requests with a body, which need writing and
//! reading at once, and upgrades still go through hyper's client (`super::upstream`).

mod codec;
mod rewind;
pub mod server;
mod server_codec;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Method, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::idle_pool::{self, IdlePool, Reusable};
use super::upstream::UpstreamError;
use codec::{BodyDecoder, Decoded, Parsed};
pub use codec::{ProtocolError, RequestHead};

/// Bytes read from the upstream at a time (at least).
const READ_SIZE: usize = 16 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed; empty whenever the connection is idle.
    buf: BytesMut,
    /// The response deadline's timer, kept for the connection's life: arming a timer per request
    /// and cancelling it was ~750 instructions of a small request (`bench/cost.sh`). It may still
    /// hold an earlier exchange's (earlier) deadline; see [`until_deadline`].
    timer: Pin<Box<Sleep>>,
}

impl Reusable for Conn {
    /// Whether an idle connection can carry a request. An idle socket that turned readable was
    /// closed by the upstream (or holds bytes nobody asked for): either way it is done.
    fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// One worker's idle lean connections.
pub struct H1Pool {
    idle: Arc<IdlePool<Conn>>,
    connect_timeout: Duration,
    /// How long the upstream may take to answer with a response head, once the request is sent.
    response_timeout: Duration,
}

/// How an exchange on one connection failed, which decides whether a fresh connection may try.
enum Failure {
    /// The upstream answered nothing at all: on a pooled connection, it had closed it.
    NoResponse(UpstreamError),
    Other(UpstreamError),
}

impl H1Pool {
    /// Must be called inside the worker's runtime: the pool's sweeper runs there.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        response_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(H1Pool {
            idle: IdlePool::new(idle_timeout),
            connect_timeout,
            response_timeout,
        })
    }

    /// Sends a bodiless request, its `head` written by [`RequestHead`], to `authority`.
    /// When a pooled connection turns out closed (nothing came back), an idempotent request is
    /// retried once on a fresh one. Each exchange must see its response head within the response
    /// timeout (connecting has its own).
    pub async fn send(
        &self,
        authority: &Authority,
        head: &[u8],
        method: &Method,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        if let Some(conn) = self.idle.checkout(authority) {
            let deadline = Instant::now() + self.response_timeout;
            match exchange(conn, head, method, deadline).await {
                Ok(done) => return Ok(self.respond(authority, done)),
                Err(Failure::NoResponse(_)) if method.is_idempotent() => {}
                Err(Failure::NoResponse(error) | Failure::Other(error)) => return Err(error),
            }
        }
        // Boxed: connecting is rare, and its future would otherwise make every request's larger.
        let conn = Box::pin(self.connect(authority)).await?;
        let deadline = Instant::now() + self.response_timeout;
        match exchange(conn, head, method, deadline).await {
            Ok(done) => Ok(self.respond(authority, done)),
            Err(Failure::NoResponse(error) | Failure::Other(error)) => Err(error),
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, UpstreamError> {
        Ok(Conn {
            stream: idle_pool::connect(authority, self.connect_timeout).await?,
            buf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep(self.response_timeout)),
        })
    }

    fn respond(
        &self,
        authority: &Authority,
        (conn, head): (Conn, codec::ResponseHead),
    ) -> Response<ResponseBody> {
        let mut body = ResponseBody {
            decoder: BodyDecoder::new(head.framing),
            conn: Some(conn),
            release: head
                .reusable
                .then(|| (self.idle.clone(), authority.clone())),
        };
        if body.decoder.is_done() {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        response
    }
}

/// Writes the request head and reads the final response head, by `deadline`. A connection that
/// timed out is dropped: its response may still come.
async fn exchange(
    mut conn: Conn,
    head: &[u8],
    method: &Method,
    deadline: Instant,
) -> Result<(Conn, codec::ResponseHead), Failure> {
    let Conn { stream, buf, timer } = &mut conn;
    let exchanged = tokio::select! {
        biased;
        exchanged = write_and_read_head(stream, buf, head, method) => exchanged,
        () = until_deadline(timer.as_mut(), deadline) => {
            Err(Failure::Other(UpstreamError::ResponseTimeout))
        }
    };
    exchanged.map(|response| (conn, response))
}

async fn write_and_read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &[u8],
    method: &Method,
) -> Result<codec::ResponseHead, Failure> {
    if let Err(error) = stream.write_all(head).await {
        return Err(Failure::NoResponse(UpstreamError::Io(error)));
    }
    let mut received = false;
    loop {
        if !buf.is_empty() {
            match codec::parse_response_head(buf, method) {
                Ok(Parsed::Final(head)) => return Ok(head),
                Ok(Parsed::Informational) => continue,
                Ok(Parsed::Partial) => {}
                Err(error) => return Err(Failure::Other(UpstreamError::Protocol(error))),
            }
        }
        buf.reserve(READ_SIZE);
        let error = match stream.read_buf(buf).await {
            Ok(0) => UpstreamError::Protocol(ProtocolError::Truncated),
            Ok(_) => {
                received = true;
                continue;
            }
            Err(error) => UpstreamError::Io(error),
        };
        return Err(if received {
            Failure::Other(error)
        } else {
            Failure::NoResponse(error)
        });
    }
}

/// Resolves at `deadline` on a connection's timer that may hold an earlier one: the lean client's
/// response timer and the lean server's head timer. It is moved only when it would fire late, or
/// when it fires before `deadline`, which on a busy connection is about once per timeout rather
/// than once per request.
async fn until_deadline(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    loop {
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// Why reading a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("reading the upstream response failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A response body read straight from its upstream connection, which goes back to the pool once
/// the body has ended cleanly. Dropped early (the client went away), it closes the connection.
pub struct ResponseBody {
    decoder: BodyDecoder,
    conn: Option<Conn>,
    release: Option<(Arc<IdlePool<Conn>>, Authority)>,
}

impl ResponseBody {
    /// The body has ended: the connection is reused when the response allowed it and nothing
    /// follows it in the buffer.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if let Some((pool, authority)) = self.release.take() {
            if conn.buf.is_empty() {
                pool.give_back(authority, conn);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let decoded = match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::NeedMore) => None,
                other => Some(other),
            };
            if let Some(decoded) = decoded {
                let frame = match decoded {
                    Ok(Decoded::Data(data)) => Some(Ok(Frame::data(data))),
                    Ok(Decoded::Trailers(trailers)) => Some(Ok(Frame::trailers(trailers))),
                    Ok(Decoded::End | Decoded::NeedMore) => None,
                    Err(error) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                };
                if this.decoder.is_done() {
                    this.finish();
                }
                return Poll::Ready(frame);
            }
            conn.buf.reserve(READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    // Closed: the end of a body framed by the close, or a truncated one. The
                    // connection is gone either way.
                    this.conn = None;
                    return match this.decoder.at_eof() {
                        Ok(_) => Poll::Ready(None),
                        Err(error) => Poll::Ready(Some(Err(error.into()))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(exact) => SizeHint::with_exact(exact),
            None => SizeHint::default(),
        }
    }
}
