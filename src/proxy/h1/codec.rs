//! HTTP/1.1 message framing for the lean upstream client, as pure functions over byte buffers: the
//! request head written, the response head parsed (with the framing of its body, RFC 9112 §6.3),
//! and the response body decoded. No I/O here, so every rule is tested without a network.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most header fields accepted in a response head or trailer section (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest response head or trailer section accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Why an upstream's response could not be read as HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed response head: {0}")]
    Head(String),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("unexpected 101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedSwitch,
    #[error("malformed chunked body")]
    Chunked,
    #[error("upstream closed the connection before the response ended")]
    Truncated,
}

/// A request head being written: `METHOD target HTTP/1.1`, the fields, the empty line. The
/// `http` types refuse CR, LF and NUL in every part, and callers pass only their bytes or bytes
/// checked by the same rule, so nothing written here can split the request.
pub struct RequestHead(Vec<u8>);

impl RequestHead {
    /// `fields_size`: about how many bytes the fields will take.
    pub fn new(method: &Method, target: &str, fields_size: usize) -> Self {
        let mut out = Vec::with_capacity(method.as_str().len() + target.len() + fields_size + 16);
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHead(out)
    }

    pub fn field(&mut self, name: &HeaderName, value: &[u8]) {
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// Writes each header field, then the empty line that ends a head.
pub fn encode_fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where a field's name and value sit in the head: (name at, name length, value at, value length).
pub type FieldSpan = (usize, usize, usize, usize);

pub fn span(base: usize, part: &[u8]) -> (usize, usize) {
    (part.as_ptr() as usize - base, part.len())
}

/// The spans of `fields`, parsed from a buffer starting at address `base`, so that values can
/// share the head's bytes once it is split off the buffer (the parser borrows it until then).
pub fn field_spans(base: usize, fields: &[httparse::Header<'_>]) -> Vec<FieldSpan> {
    fields
        .iter()
        .map(|field| {
            let (name_at, name_len) = span(base, field.name.as_bytes());
            let (value_at, value_len) = span(base, field.value);
            (name_at, name_len, value_at, value_len)
        })
        .collect()
}

/// Room for the most fields a head may have, left uninitialised: zeroing it cost more than
/// parsing a typical head.
pub fn field_slots<'buf>() -> [MaybeUninit<httparse::Header<'buf>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The header map of a parsed head, with room for `extra` fields more; values share `head`'s
/// bytes.
pub fn header_map(head: &Bytes, spans: &[FieldSpan], extra: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + extra);
    for &(name_at, name_len, value_at, value_len) in spans {
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len]).ok()?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body has been read.
    pub reusable: bool,
}

/// What the bytes at the front of a buffer hold.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A 1xx response (other than 101), consumed; the final one follows.
    Informational,
    Final(ResponseHead),
}

/// Parses the response head at the front of `buf`, consuming it when complete.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ProtocolError> {
    let mut fields = field_slots();
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let consumed = match parsed {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(error) => return Err(ProtocolError::Head(error.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| ProtocolError::Head(format!("status {code}")))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let spans = field_spans(buf.as_ptr() as usize, response.headers);
    let head = buf.split_to(consumed).freeze();
    // The relayed response gains a Date.
    let mut headers = header_map(&head, &spans, 1)
        .ok_or_else(|| ProtocolError::Head("invalid header field".into()))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProtocolError::UnexpectedSwitch);
    }
    if status.is_informational() {
        return Ok(Parsed::Informational);
    }
    let (framing, reusable) = framing(status, version, method, &mut headers)?;
    Ok(Parsed::Final(ResponseHead {
        status,
        version,
        headers,
        framing,
        reusable,
    }))
}

/// The body's framing (RFC 9112 §6.3) and whether the connection stays usable afterwards.
/// Ambiguous framing (both Transfer-Encoding and Content-Length) follows Transfer-Encoding, drops
/// Content-Length and retires the connection: it is how request smuggling starts.
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), ProtocolError> {
    let persistent = version == Version::HTTP_11
        && !has_token(headers, header::CONNECTION, "close")
        || version == Version::HTTP_10 && has_token(headers, header::CONNECTION, "keep-alive");
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, persistent));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let ambiguous = headers.remove(header::CONTENT_LENGTH).is_some();
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            (Framing::Chunked, persistent && !ambiguous)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value
            .to_str()
            .map_err(|_| ProtocolError::ContentLength)?
            .split(',')
        {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ProtocolError::ContentLength);
            }
            let parsed: u64 = part.parse().map_err(|_| ProtocolError::ContentLength)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(ProtocolError::ContentLength);
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, persistent),
        Some(length) => (Framing::Length(length), persistent),
        None => (Framing::UntilClose, false),
    })
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// What decoding found at the front of the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Decodes a response body from the bytes read so far, handing out data without copying.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of body still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(length) => Some(length),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = (buf.len() as u64).min(remaining);
                    let left = remaining - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkDataEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take as usize).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((consumed, size))) => {
                        buf.advance(consumed);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(ProtocolError::Chunked);
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(ProtocolError::Chunked),
                },
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunked);
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => return self.decode_trailers(buf),
            }
        }
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (consumed, parsed) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ProtocolError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(ProtocolError::Chunked),
        };
        let mut trailers = HeaderMap::new();
        for field in parsed {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(field.name.as_bytes()),
                HeaderValue::from_bytes(field.value),
            ) else {
                return Err(ProtocolError::Chunked);
            };
            trailers.append(name, value);
        }
        buf.advance(consumed);
        self.state = State::Done;
        Ok(if trailers.is_empty() {
            Decoded::End
        } else {
            Decoded::Trailers(trailers)
        })
    }

    /// The upstream closed the connection: the end of the body, or a truncated one.
    pub fn at_eof(&mut self) -> Result<Decoded, ProtocolError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            _ => Err(ProtocolError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests;
