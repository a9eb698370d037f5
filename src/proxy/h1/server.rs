//! The lean HTTP/1.1 server: serves a connection's bodiless requests itself, in the connection's
//! task, and hands the connection to hyper's server at the first request it does not take (a
//! body, an upgrade, HTTP/2, anything odd; see `server_codec`). hyper's server costs about as
//! many instructions per request as everything else the proxy does (`bench/cost.sh`); this path
//! reads the head with the same parser (httparse), calls the same handler and writes the response
//! head and a small body in one write.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::rewind::Rewind;
use super::server_codec::{
    self, BodyFraming, LAST_CHUNK, LeanRequest, ParsedRequest, ResponseContext,
};
use crate::proxy::handler::Connection;
use crate::proxy::request_body::RequestBody;
use crate::proxy::{Proxy, ProxyBody};

/// Bytes read from the client at a time (at least).
const READ_SIZE: usize = 8 * 1024;
/// Body bytes gathered before they are written; larger data is written as it comes.
const WRITE_GATHER: usize = 64 * 1024;

/// Serves `stream` until the client or the upstream ends it, or `shutdown` turns true.
pub async fn serve<S>(
    mut stream: S,
    connection: Connection,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout = proxy.config.header_read_timeout;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::with_capacity(READ_SIZE);
    let mut head_timer = HeadTimer::new(header_read_timeout);
    // One wait for shutdown per connection, polled between requests: waiting afresh before each
    // request registered and unregistered a waiter every time.
    let stopping = shutdown.clone();
    let mut stopped =
        std::pin::pin!(async move { crate::shutdown::until_stopped(&mut shutdown).await });
    loop {
        let next = next_request(&mut stream, &mut buf, &mut head_timer, stopped.as_mut()).await;
        let lean = match next {
            Next::Request(lean) => lean,
            Next::HandOver => {
                let stream = Rewind::new(stream, buf.freeze());
                return crate::proxy::server::serve_with_hyper(stream, connection, proxy, watcher)
                    .await;
            }
            Next::Close => break,
        };
        let LeanRequest {
            request,
            keep_alive,
        } = lean;
        let head_only = request.method() == Method::HEAD;
        let client_version = request.version();
        let response = proxy
            .handle(request.map(|()| RequestBody::Empty), connection)
            .await;
        let context = ResponseContext {
            head_only,
            client_version,
            exact_length: response.body().size_hint().exact(),
            keep_alive: keep_alive && !*stopping.borrow(),
        };
        out.clear();
        match write_response(&mut stream, response, context, &mut out).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                tracing::debug!(peer = %connection.peer, %error, "writing the response failed");
                return;
            }
        }
    }
    let _ = stream.shutdown().await;
}

// The large variant is the common one; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(LeanRequest),
    HandOver,
    Close,
}

/// The deadline for a request head, with one timer per connection rather than one per request:
/// arming a timer is a fair share of a small request's cost. The timer may fire early (it still
/// holds an earlier request's deadline); it is then moved to the current one, so a busy
/// connection re-arms it about once per timeout, and an idle or slow one is closed on time.
struct HeadTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl HeadTimer {
    fn new(timeout: Duration) -> Self {
        HeadTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Resolves once `started + timeout` has passed.
    async fn expired(&mut self, started: Instant) {
        super::until_deadline(self.sleep.as_mut(), started + self.timeout).await;
    }
}

/// Reads until a whole request head is buffered (or the connection ends, goes quiet for the
/// head timeout, or must close for shutdown while idle).
async fn next_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    head_timer: &mut HeadTimer,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
) -> Next {
    let started = Instant::now();
    loop {
        if !buf.is_empty() {
            match server_codec::parse_request_head(buf) {
                ParsedRequest::Lean(lean) => return Next::Request(lean),
                ParsedRequest::HandOver => return Next::HandOver,
                ParsedRequest::Partial => {}
            }
        }
        buf.reserve(READ_SIZE);
        let idle = buf.is_empty();
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buf) => read,
            () = head_timer.expired(started) => return Next::Close,
            // Between requests a stopping server closes the connection; mid-head, it lets the
            // request finish.
            () = stopped.as_mut(), if idle => return Next::Close,
        };
        // The end, an error, or a client that never finishes its head (or keeps an idle
        // connection past the timeout): the connection is let go.
        if !matches!(read, Ok(read) if read > 0) {
            return Next::Close;
        }
    }
}

/// Writes `response` and its body; says whether the connection can carry another request.
async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: Response<ProxyBody>,
    context: ResponseContext,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let (mut parts, mut body) = response.into_parts();
    let (framing, keep_alive) =
        server_codec::frame_response(parts.status, &mut parts.headers, context);
    if !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, http_date());
    }
    server_codec::encode_response_head(parts.status, &parts.headers, out);
    if framing == BodyFraming::None {
        stream.write_all(out).await?;
        stream.flush().await?;
        return Ok(keep_alive);
    }
    let mut remaining = match framing {
        BodyFraming::Length(length) => Some(length),
        _ => None,
    };
    loop {
        // A frame that is ready now goes out with what is gathered; otherwise what is gathered
        // goes out before waiting for the next one.
        let frame = match poll_now(&mut body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                stream.write_all(out).await?;
                stream.flush().await?;
                out.clear();
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: not sent (hyper sends them only to clients asking with `TE`).
                Err(_) => continue,
            },
            Some(Err(error)) => {
                // Cut short: closing without the end of the framing tells the client.
                stream.write_all(out).await?;
                return Err(std::io::Error::other(error));
            }
        };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = remaining.as_mut() {
            *left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(|| std::io::Error::other("body longer than its Content-Length"))?;
        }
        if framing == BodyFraming::Chunked {
            server_codec::encode_chunk_start(data.len(), out);
        }
        gather(stream, out, &data).await?;
        if framing == BodyFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if remaining.is_some_and(|left| left > 0) {
        stream.write_all(out).await?;
        return Err(std::io::Error::other(
            "body shorter than its Content-Length",
        ));
    }
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    stream.write_all(out).await?;
    stream.flush().await?;
    Ok(keep_alive && framing != BodyFraming::UntilClose)
}

/// Appends `data` to what is to be written, or writes both when that grows large.
async fn gather<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    data: &Bytes,
) -> std::io::Result<()> {
    if out.len() + data.len() <= WRITE_GATHER {
        out.extend_from_slice(data);
        return Ok(());
    }
    stream.write_all(out).await?;
    out.clear();
    stream.write_all(data).await
}

/// The body's next frame if it is ready without waiting. Polling with a no-op waker is sound: a
/// body that is not ready is polled again, with the task's waker, before anything waits on it.
fn poll_now(
    body: &mut ProxyBody,
) -> Poll<Option<Result<hyper::body::Frame<Bytes>, crate::proxy::BoxError>>> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(body).poll_frame(&mut cx)
}

/// The `Date` header value, formatted once a second per thread (as hyper does).
fn http_date() -> HeaderValue {
    thread_local! {
        static CACHED: RefCell<(u64, HeaderValue)> = const { RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).expect("an HTTP date is a valid header value");
            cached.0 = second;
        }
        cached.1.clone()
    })
}
