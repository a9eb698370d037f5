//! HTTP/1.1 framing for the lean server, as pure functions over byte buffers: which requests it
//! takes (plain HTTP/1.x requests without a body, the great majority) and which it leaves to
//! hyper, and how a response's head and body are written. No I/O here.
//!
//! Anything with a body, an upgrade, `Expect`, `CONNECT`, an HTTP/2 preface or anything malformed
//! is handed over untouched: hyper's server then reads the same bytes and answers exactly as it
//! did before the lean path existed, so every framing decision that request smuggling feeds on
//! (Transfer-Encoding, Content-Length) stays hyper's.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use super::codec::{MAX_HEAD_BYTES, encode_fields, field_slots, field_spans, header_map, span};

/// Fields the proxy adds to a request on its way upstream (X-Forwarded-*, the request id,
/// identity headers), so the map need not grow.
const FORWARDING_FIELDS: usize = 8;

/// A request the lean server serves.
#[derive(Debug)]
pub struct LeanRequest {
    pub request: Request<()>,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
}

/// What the bytes at the front of the connection's buffer hold.
// The large variant is the common one; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ParsedRequest {
    /// More bytes are needed.
    Partial,
    /// Not for the lean server: hyper serves the connection from this request on. Nothing was
    /// consumed.
    HandOver,
    /// A bodiless request, consumed from the buffer.
    Lean(LeanRequest),
}

/// Parses the request head at the front of `buf`; consumes it only when the lean server takes it.
pub fn parse_request_head(buf: &mut BytesMut) -> ParsedRequest {
    let mut fields = field_slots();
    let mut parsed = httparse::Request::new(&mut []);
    let consumed = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => {
            return ParsedRequest::Partial;
        }
        // Too large, too many fields, not HTTP/1.x (an HTTP/2 preface): hyper's to answer.
        _ => return ParsedRequest::HandOver,
    };
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return ParsedRequest::HandOver,
    };
    let method = match parsed
        .method
        .map(|method| Method::from_bytes(method.as_bytes()))
    {
        Some(Ok(method)) if method != Method::CONNECT => method,
        _ => return ParsedRequest::HandOver,
    };
    let mut close = false;
    let mut keep_alive_token = false;
    let mut hosts = 0;
    let mut content_lengths = 0;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // A client may announce an empty body; anything else is a body (or a smuggling
            // attempt) and hyper's.
            if field.value != b"0" {
                return ParsedRequest::HandOver;
            }
            content_lengths += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return ParsedRequest::HandOver;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|&byte| byte == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if hosts > 1 || content_lengths > 1 {
        return ParsedRequest::HandOver;
    }
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };

    let base = buf.as_ptr() as usize;
    let target = span(base, parsed.path.unwrap_or_default().as_bytes());
    let spans = field_spans(base, parsed.headers);
    let head = buf.split_to(consumed).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1));
    let (Ok(uri), Some(headers)) = (uri, header_map(&head, &spans, FORWARDING_FIELDS)) else {
        // A target or field the `http` types refuse: hyper answers it (400), from the same bytes.
        restore(buf, &head);
        return ParsedRequest::HandOver;
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    ParsedRequest::Lean(LeanRequest {
        request,
        keep_alive,
    })
}

/// Puts `head`, split off the buffer, back in front of it.
fn restore(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, which know no chunks).
    UntilClose,
}

/// What a response needs to be written.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext {
    /// The request was HEAD: headers only.
    pub head_only: bool,
    pub client_version: Version,
    /// The body's exact length when known before it is read.
    pub exact_length: Option<u64>,
    /// Whether the connection is to carry another request afterwards.
    pub keep_alive: bool,
}

/// Decides the body's framing and sets the headers that announce it and the connection's fate.
/// Returns the framing and whether the connection stays open after the body.
pub fn frame_response(
    status: StatusCode,
    headers: &mut HeaderMap,
    context: ResponseContext,
) -> (BodyFraming, bool) {
    // The framing is this hop's: whatever the upstream said was for the upstream hop. Most
    // responses carry neither of these, and one look over the names costs less than removing
    // each (a hashed lookup).
    let (mut has_transfer_encoding, mut has_connection) = (false, false);
    for name in headers.keys() {
        has_transfer_encoding |= name == header::TRANSFER_ENCODING;
        has_connection |= name == header::CONNECTION;
    }
    if has_transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    let mut keep_alive = context.keep_alive;
    let framing = if status.is_informational() || status == StatusCode::NO_CONTENT {
        headers.remove(header::CONTENT_LENGTH);
        BodyFraming::None
    } else if context.head_only || status == StatusCode::NOT_MODIFIED {
        // The length a GET would have, when the handler knows it (a generated page).
        if !headers.contains_key(header::CONTENT_LENGTH) {
            if let Some(length) = context.exact_length.filter(|&length| length > 0) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
        }
        BodyFraming::None
    } else if let Some(length) = single_length(headers) {
        BodyFraming::Length(length)
    } else if let Some(length) = context.exact_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        BodyFraming::Length(length)
    } else if context.client_version == Version::HTTP_11 {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        BodyFraming::Chunked
    } else {
        headers.remove(header::CONTENT_LENGTH);
        keep_alive = false;
        BodyFraming::UntilClose
    };
    if has_connection {
        headers.remove(header::CONNECTION);
    }
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if context.client_version == Version::HTTP_10 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    (framing, keep_alive)
}

/// The one Content-Length the headers carry, if exactly one valid one.
fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Writes the status line and header fields. The `http` types refuse CR, LF and NUL in names
/// and values, so nothing written here can split the response.
pub fn encode_response_head(status: StatusCode, headers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    encode_fields(headers, out);
}

/// The line that opens a chunk of `length` bytes.
pub fn encode_chunk_start(length: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{length:x}\r\n").as_bytes());
}

/// What ends a chunked body: the last chunk and no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests;
