//! Client connections, byte by byte: the lean HTTP/1.1 server answers pipelined requests in order,
//! frames bodies for HTTP/1.0 and 1.1 clients, honours `Connection: close`, hands a connection to
//! hyper's server at the first request with a body without losing a byte, lets go of clients that
//! never finish a head, and closes idle connections when the server stops.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::framing::proxy_to_raw_backend;
use crate::support::manifests::{self, write};
use crate::support::{self, backends};

/// One response read off a raw connection: its head (lower-cased) and body.
struct RawResponse {
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn status(&self) -> u16 {
        self.head[9..12].parse().expect("a status code")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            (field == name).then(|| value.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `stream`, `buf` holding what was read past the previous one. Bodies
/// are read by Content-Length, chunked framing, or to the close.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> RawResponse {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(stream, buf).await.expect("a response head");
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end + 4);
    let mut response = RawResponse {
        head,
        body: Vec::new(),
    };
    let status = response.status();
    if head_request || status == 204 || status == 304 {
        return response;
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().expect("a length");
        while buf.len() < length {
            fill(stream, buf).await.expect("the whole body");
        }
        response.body = buf.drain(..length).collect();
    } else if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(stream, buf).await.expect("a chunk line");
            };
            let size = usize::from_str_radix(&String::from_utf8_lossy(&buf[..line_end]), 16)
                .expect("a chunk size");
            while buf.len() < line_end + 2 + size + 2 {
                fill(stream, buf).await.expect("a whole chunk");
            }
            response
                .body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(stream, buf).await.is_some() {}
        response.body = std::mem::take(buf);
    }
    response
}

/// Reads more into `buf`; `None` at the end of the connection. Never waits more than 5 s.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
        .await
        .expect("the proxy answers within 5 s");
    match read {
        Ok(0) | Err(_) => None,
        Ok(read) => {
            buf.extend_from_slice(&chunk[..read]);
            Some(read)
        }
    }
}

/// Whether the proxy closed the connection (nothing more arrives, within 5 s).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    fill(stream, &mut rest).await.is_none() && rest.is_empty()
}

/// kube-iap with `config`, serving `echo.test` to all users from the echo backend.
async fn proxy_to_echo(
    config: kube_iap::proxy::ProxyConfig,
) -> (tempfile::TempDir, kube_iap::serve::Running) {
    let backend = backends::echo("echo").await;
    let dir = manifests::folder(&[("echo", backend.port())]);
    write(
        dir.path(),
        "p.yaml",
        &manifests::policy("echo", "echo.test", "echo", &["allUsers"]),
    );
    let server = support::start_server_with(dir.path(), config).await;
    (dir, server)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .expect("connect to the proxy")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let mut stream = connect(server.http_addr.unwrap()).await;
    stream
        .write_all(
            b"GET /plain HTTP/1.1\r\nHost: raw.test\r\n\r\n\
              GET /chunked HTTP/1.1\r\nHost: raw.test\r\n\r\n\
              HEAD /head HTTP/1.1\r\nHost: raw.test\r\n\r\n\
              GET /nowhere HTTP/1.1\r\nHost: unknown.test\r\nAccept: application/json\r\n\r\n\
              GET /plain HTTP/1.1\r\nHost: raw.test\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let plain = read_response(&mut stream, &mut buf, false).await;
    assert_eq!((plain.status(), plain.text().as_str()), (200, "plain"));
    assert!(plain.header("date").is_some(), "{}", plain.head);
    let chunked = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(chunked.text(), "hello world");
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    let head = read_response(&mut stream, &mut buf, true).await;
    assert_eq!(head.header("content-length"), Some("11"));
    let missing = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.header("x-kube-iap-generated-response"),
        Some("true")
    );
    let last = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(last.text(), "plain");
    assert!(buf.is_empty(), "nothing more than five responses");
    server.shutdown().await;
}

#[tokio::test]
async fn http_1_0_clients_get_bodies_they_can_read_and_their_connection_closed() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let http = server.http_addr.unwrap();
    let mut stream = connect(http).await;
    stream
        .write_all(b"GET /chunked HTTP/1.0\r\nHost: raw.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let response = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(response.text(), "hello world", "{}", response.head);
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(closed(&mut stream).await);

    // With keep-alive, a 1.0 client keeps its connection when the length is known.
    let mut stream = connect(http).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET /plain HTTP/1.0\r\nHost: raw.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(response.text(), "plain");
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn connection_close_from_the_client_is_honoured_after_the_response() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let mut stream = connect(server.http_addr.unwrap()).await;
    stream
        .write_all(b"GET /plain HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let response = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(response.text(), "plain");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(closed(&mut stream).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_with_a_body_after_bodiless_ones_is_served_whole_on_the_same_connection() {
    let (_dir, server) = proxy_to_echo(kube_iap::proxy::ProxyConfig {
        access_log: false,
        ..Default::default()
    })
    .await;
    let mut stream = connect(server.http_addr.unwrap()).await;
    let mut buf = Vec::new();
    // The GET, then a POST whose head and body arrive together with the GET after it: the
    // lean server has read all of it when it hands the connection over.
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: echo.test\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(first.status(), 200);
    stream
        .write_all(
            b"POST /count HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 11\r\n\r\nhello world\
              GET /after HTTP/1.1\r\nHost: echo.test\r\n\r\n",
        )
        .await
        .unwrap();
    let posted = read_response(&mut stream, &mut buf, false).await;
    let posted: serde_json::Value = serde_json::from_slice(&posted.body).expect("echo JSON");
    assert_eq!(posted["method"], "POST");
    assert_eq!(posted["bodyBytes"], 11);
    let after = read_response(&mut stream, &mut buf, false).await;
    let after: serde_json::Value = serde_json::from_slice(&after.body).expect("echo JSON");
    assert_eq!(after["path"], "/after");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_let_go_after_the_header_timeout() {
    let (_dir, server) = proxy_to_echo(kube_iap::proxy::ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        access_log: false,
        ..Default::default()
    })
    .await;
    let http = server.http_addr.unwrap();
    let mut slow = connect(http).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: echo.test\r\n")
        .await
        .unwrap();
    assert!(closed(&mut slow).await, "a half-sent head is dropped");
    let mut idle = connect(http).await;
    assert!(closed(&mut idle).await, "a silent connection is dropped");
    server.shutdown().await;
}

#[tokio::test]
async fn the_header_timeout_counts_from_the_last_response_not_from_the_connection_start() {
    let (_dir, server) = proxy_to_echo(kube_iap::proxy::ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        access_log: false,
        ..Default::default()
    })
    .await;
    let mut stream = connect(server.http_addr.unwrap()).await;
    let mut buf = Vec::new();
    // The waits are the behaviour under test: each request comes 200 ms after the last, within
    // the timeout, while the second comes after the first request's deadline has passed.
    for path in ["/first", "/second"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: echo.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream, &mut buf, false).await;
        let echoed: serde_json::Value = serde_json::from_slice(&response.body).expect("echo JSON");
        assert_eq!(
            echoed["path"], path,
            "{path} is served on the kept connection"
        );
    }
    assert!(
        closed(&mut stream).await,
        "then the quiet connection is dropped"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stopping_the_server_closes_idle_keep_alive_connections_promptly() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let mut stream = connect(server.http_addr.unwrap()).await;
    stream
        .write_all(b"GET /plain HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut stream, &mut buf, false).await.text(),
        "plain"
    );
    // The drain would wait 10 s for a connection that stays open.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("the idle connection does not hold the shutdown up");
    assert!(closed(&mut stream).await);
}
