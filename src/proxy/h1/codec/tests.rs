use super::*;

fn head(text: &str, method: &Method) -> Result<Parsed, ProtocolError> {
    let mut buf = BytesMut::from(text.as_bytes());
    parse_response_head(&mut buf, method)
}

fn final_head(text: &str, method: &Method) -> ResponseHead {
    match head(text, method) {
        Ok(Parsed::Final(head)) => head,
        other => panic!("expected a final head for {text:?}, got {other:?}"),
    }
}

/// Decodes all of `wire` for `framing`, fed in pieces of `step` bytes, then EOF.
fn decode_all(
    framing: Framing,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, HeaderMap), ProtocolError> {
    let mut decoder = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = HeaderMap::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Trailers(found) => trailers = found,
            Decoded::End => return Ok((body, trailers)),
            Decoded::NeedMore if fed < wire.len() => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
            Decoded::NeedMore => match decoder.at_eof()? {
                Decoded::End => return Ok((body, trailers)),
                other => panic!("unexpected {other:?} at EOF"),
            },
        }
    }
}

#[test]
fn request_head_is_method_target_version_then_each_field() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("app.example"));
    headers.append("x-two", HeaderValue::from_static("a"));
    headers.append("x-two", HeaderValue::from_static("b"));
    let mut head = RequestHead::new(&Method::GET, "/a?b=c", 0);
    for (name, value) in &headers {
        head.field(name, value.as_bytes());
    }
    assert_eq!(
        String::from_utf8(head.finish()).unwrap(),
        "GET /a?b=c HTTP/1.1\r\nhost: app.example\r\nx-two: a\r\nx-two: b\r\n\r\n"
    );
}

#[test]
fn framing_follows_rfc_9112_section_6_3() {
    use Framing::*;
    let cases: &[(&str, Method, Framing, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
            Length(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
            Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::HEAD,
            Empty,
            true,
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET, Empty, true),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
            Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
            Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Method::GET,
            Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Method::GET,
            UntilClose,
            false,
        ),
        // Both: Transfer-Encoding wins and the connection is never reused.
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
            Chunked,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", Method::GET, UntilClose, false),
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n",
            Method::GET,
            Length(2),
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\ncontent-length: 2\r\n\r\n",
            Method::GET,
            Length(2),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n",
            Method::GET,
            Length(2),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n",
            Method::GET,
            Length(2),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\ncontent-length: 4\r\n\r\n",
            Method::GET,
            Length(4),
            true,
        ),
    ];
    for (text, method, framing, reusable) in cases {
        let parsed = final_head(text, method);
        assert_eq!(
            (parsed.framing, parsed.reusable),
            (*framing, *reusable),
            "{text:?}"
        );
    }
}

#[test]
fn ambiguous_length_is_dropped_so_it_cannot_reach_the_client() {
    let parsed = final_head(
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        &Method::GET,
    );
    assert!(!parsed.headers.contains_key(header::CONTENT_LENGTH));
}

#[test]
fn bad_heads_are_refused() {
    let cases: &[(&str, ProtocolError)] = &[
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 4x\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            ProtocolError::UnexpectedSwitch,
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(head(text, &Method::GET).unwrap_err(), *expected, "{text:?}");
    }
    for text in [
        "HTTP/1.1 200 OK\r\nbad header: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        assert!(
            matches!(head(text, &Method::GET), Err(ProtocolError::Head(_))),
            "{text:?}"
        );
    }
    let too_many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    assert!(head(&format!("HTTP/1.1 200 OK\r\n{too_many}\r\n"), &Method::GET).is_err());
    let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
    assert_eq!(
        head(&endless, &Method::GET).unwrap_err(),
        ProtocolError::HeadTooLarge
    );
}

#[test]
fn partial_and_informational_heads_wait_for_the_final_one() {
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET),
        Ok(Parsed::Partial)
    ));
    let mut buf = BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx"[..]);
    assert!(matches!(
        parse_response_head(&mut buf, &Method::GET),
        Ok(Parsed::Informational)
    ));
    match parse_response_head(&mut buf, &Method::GET) {
        Ok(Parsed::Final(head)) => assert_eq!(head.status, StatusCode::OK),
        other => panic!("{other:?}"),
    }
    assert_eq!(&buf[..], b"x", "the body's bytes stay in the buffer");
}

#[test]
fn header_values_and_duplicates_survive_parsing() {
    let parsed = final_head(
        "HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Bin: caf\u{e9}\r\ncontent-length: 0\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(parsed.status, StatusCode::NOT_FOUND);
    let cookies: Vec<_> = parsed.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(parsed.headers["x-bin"].as_bytes(), "caf\u{e9}".as_bytes());
}

#[test]
fn bodies_decode_whatever_the_read_sizes() {
    let chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let with_trailers = b"3\r\nabc\r\n0\r\nx-check: ok\r\n\r\n";
    for step in [1, 2, 3, 7, 1000] {
        assert_eq!(
            decode_all(Framing::Chunked, chunked, step).unwrap().0,
            b"hello world"
        );
        let (body, trailers) = decode_all(Framing::Chunked, with_trailers, step).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(trailers["x-check"], "ok");
        assert_eq!(
            decode_all(Framing::Length(5), b"hello", step).unwrap().0,
            b"hello"
        );
        assert_eq!(
            decode_all(Framing::UntilClose, b"to the end", step)
                .unwrap()
                .0,
            b"to the end"
        );
        assert_eq!(decode_all(Framing::Empty, b"", step).unwrap().0, b"");
    }
}

#[test]
fn a_length_body_leaves_the_next_response_in_the_buffer() {
    let mut decoder = BodyDecoder::new(Framing::Length(3));
    let mut buf = BytesMut::from(&b"abcHTTP/1.1"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from_static(b"abc")))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
    assert_eq!(&buf[..], b"HTTP/1.1");
}

#[test]
fn truncated_and_malformed_bodies_are_errors() {
    assert_eq!(
        decode_all(Framing::Length(10), b"short", 4),
        Err(ProtocolError::Truncated)
    );
    assert_eq!(
        decode_all(Framing::Chunked, b"5\r\nhel", 4),
        Err(ProtocolError::Truncated)
    );
    for bad in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"ffffffffffffffffff\r\n",
    ] {
        assert_eq!(
            decode_all(Framing::Chunked, bad, 3),
            Err(ProtocolError::Chunked),
            "{bad:?}"
        );
    }
    let endless_extension = format!("5;{}", "e".repeat(MAX_CHUNK_LINE + 1));
    assert_eq!(
        decode_all(Framing::Chunked, endless_extension.as_bytes(), 10_000),
        Err(ProtocolError::Chunked)
    );
}
