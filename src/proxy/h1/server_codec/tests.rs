use http::header::HeaderName;

use super::*;

fn parse(text: &str) -> (ParsedRequest, BytesMut) {
    let mut buf = BytesMut::from(text);
    let parsed = parse_request_head(&mut buf);
    (parsed, buf)
}

#[test]
fn bodiless_requests_are_taken_and_everything_else_is_left_to_hyper_unread() {
    let lean = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
    ];
    for text in lean {
        let (parsed, rest) = parse(text);
        assert!(
            matches!(parsed, ParsedRequest::Lean(_)),
            "{text:?}: {parsed:?}"
        );
        assert!(rest.is_empty(), "{text:?} consumed whole");
    }
    let handed_over = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: identity\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        "GET /\u{7f} HTTP/1.1\r\nHost: a\r\n\r\n",
        "NOT HTTP AT ALL\r\n\r\n",
    ];
    for text in handed_over {
        let (parsed, rest) = parse(text);
        assert!(
            matches!(parsed, ParsedRequest::HandOver),
            "{text:?}: {parsed:?}"
        );
        assert_eq!(rest, text.as_bytes(), "{text:?} left unread for hyper");
    }
}

#[test]
fn a_partial_head_waits_for_more_until_it_is_too_large() {
    let (parsed, rest) = parse("GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(parsed, ParsedRequest::Partial));
    assert_eq!(rest.len(), 25);
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
    assert!(matches!(parse(&endless).0, ParsedRequest::HandOver));
}

#[test]
fn the_request_keeps_its_target_fields_and_version_and_the_next_one_stays_buffered() {
    let (parsed, rest) = parse(
        "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next",
    );
    let ParsedRequest::Lean(lean) = parsed else {
        panic!("not taken: {parsed:?}")
    };
    let request = lean.request;
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri().path(), "/a/b");
    assert_eq!(request.uri().query(), Some("c=d"));
    assert_eq!(request.version(), Version::HTTP_11);
    assert_eq!(request.headers()["host"], "Example.com");
    let twos: Vec<_> = request.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert!(lean.keep_alive);
    assert_eq!(rest, "GET /next".as_bytes());
}

#[test]
fn keep_alive_follows_the_version_and_the_connection_header() {
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
    ];
    for (text, expected) in cases {
        let ParsedRequest::Lean(lean) = parse(text).0 else {
            panic!("not taken: {text:?}")
        };
        assert_eq!(lean.keep_alive, expected, "{text:?}");
    }
}

fn context(version: Version, exact_length: Option<u64>) -> ResponseContext {
    ResponseContext {
        head_only: false,
        client_version: version,
        exact_length,
        keep_alive: true,
    }
}

fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    fields
        .iter()
        .map(|&(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

/// (status, headers in, context, framing, keep-alive, content-length out, transfer-encoding out)
type Case = (
    u16,
    HeaderMap,
    ResponseContext,
    BodyFraming,
    bool,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn response_framing_table() {
    use BodyFraming::{Chunked, Length, UntilClose};
    let no_body = BodyFraming::None;
    let v11 = Version::HTTP_11;
    let v10 = Version::HTTP_10;
    let head = ResponseContext {
        head_only: true,
        ..context(v11, Some(0))
    };
    let head_of_page = ResponseContext {
        head_only: true,
        ..context(v11, Some(42))
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (200, headers(&[("content-length", "5")]), context(v11, Some(5)), Length(5), true, Some("5"), None),
        (200, headers(&[]), context(v11, Some(7)), Length(7), true, Some("7"), None),
        (200, headers(&[]), context(v11, None), Chunked, true, None, Some("chunked")),
        (200, headers(&[("transfer-encoding", "gzip, chunked")]), context(v11, None), Chunked, true, None, Some("chunked")),
        (200, headers(&[("content-length", "5"), ("content-length", "6")]), context(v11, None), Chunked, true, None, Some("chunked")),
        (200, headers(&[]), context(v10, None), UntilClose, false, None, None),
        (200, headers(&[]), context(v10, Some(3)), Length(3), true, Some("3"), None),
        (204, headers(&[("content-length", "0")]), context(v11, Some(0)), no_body, true, None, None),
        (304, headers(&[("content-length", "9")]), context(v11, Some(0)), no_body, true, Some("9"), None),
        (200, headers(&[("content-length", "9")]), head, no_body, true, Some("9"), None),
        (200, headers(&[]), head, no_body, true, None, None),
        (200, headers(&[]), head_of_page, no_body, true, Some("42"), None),
    ];
    for (status, mut fields, context, framing, keep_alive, length, encoding) in cases {
        let status = StatusCode::from_u16(status).unwrap();
        let got = frame_response(status, &mut fields, context);
        let case = format!("{status} {context:?}");
        assert_eq!(got, (framing, keep_alive), "{case}");
        let value = |name| {
            fields
                .get(name)
                .map(|value: &HeaderValue| value.to_str().unwrap())
        };
        assert_eq!(value(header::CONTENT_LENGTH), length, "{case}");
        assert_eq!(value(header::TRANSFER_ENCODING), encoding, "{case}");
    }
}

#[test]
fn the_connection_header_says_when_the_connection_closes_or_stays_for_http_1_0() {
    let mut closing = headers(&[("connection", "upgrade")]);
    let context_closing = ResponseContext {
        keep_alive: false,
        ..context(Version::HTTP_11, Some(1))
    };
    frame_response(StatusCode::OK, &mut closing, context_closing);
    assert_eq!(closing["connection"], "close");

    let mut staying = headers(&[]);
    frame_response(
        StatusCode::OK,
        &mut staying,
        context(Version::HTTP_11, Some(1)),
    );
    assert!(!staying.contains_key("connection"));

    let mut old = headers(&[]);
    frame_response(StatusCode::OK, &mut old, context(Version::HTTP_10, Some(1)));
    assert_eq!(old["connection"], "keep-alive");
}

#[test]
fn the_response_head_is_a_status_line_and_fields() {
    let mut out = Vec::new();
    let fields = headers(&[("content-length", "2"), ("x-a", "b")]);
    encode_response_head(StatusCode::NOT_FOUND, &fields, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nx-a: b\r\n\r\n"
    );
    let mut chunk = Vec::new();
    encode_chunk_start(255, &mut chunk);
    assert_eq!(chunk, b"ff\r\n");
}
