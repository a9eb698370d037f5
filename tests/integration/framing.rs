//! How upstream responses are framed, end to end: a hand-written HTTP/1.1 backend sends each
//! framing the lean upstream client must read (chunked, until close, informational responses
//! first, HEAD) and some it must refuse, and the proxy either relays them whole or answers 502.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::manifests::{self, write};
use crate::support::{self, get, send};

/// The raw response the backend sends for `path`, numbered by its connection (`{conn}`), and
/// whether it closes the connection afterwards. Empty: it answers nothing and holds the
/// connection, as an application stuck on a request does.
fn raw_response(method: &str, path: &str) -> (String, bool) {
    match (method, path) {
        (_, "/stall") => (String::new(), false),
        (_, "/chunked") => (
            "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".into(),
            false,
        ),
        (_, "/until-close") => ("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\n\r\nread to the end".into(), true),
        (_, "/early-hints") => (
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 5\r\n\r\nfinal".into(),
            false,
        ),
        ("HEAD", "/head") => ("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 11\r\n\r\n".into(), false),
        (_, "/two-lengths") => ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc".into(), false),
        (_, "/truncated") => ("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".into(), true),
        (_, "/not-http") => ("SSH-2.0-OpenSSH_9.2\r\n\r\n".into(), true),
        _ => ("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 5\r\n\r\nplain".into(), false),
    }
}

/// A keep-alive HTTP/1.1 backend that answers from [`raw_response`].
async fn raw_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let conn = connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let mut line = head.split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let (response, close) = raw_response(method, path);
                    if response.is_empty() {
                        let _ = stream.read(&mut [0u8; 1]).await;
                        return;
                    }
                    let response = response.replace("{conn}", &conn.to_string());
                    if stream.write_all(response.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    port
}

pub async fn proxy_to_raw_backend() -> (tempfile::TempDir, kube_iap::serve::Running) {
    proxy_to_raw_backend_with(kube_iap::proxy::ProxyConfig {
        access_log: false,
        workers: 1,
        ..Default::default()
    })
    .await
}

/// The raw backend behind kube-iap configured by `config` (one worker: one upstream pool).
async fn proxy_to_raw_backend_with(
    config: kube_iap::proxy::ProxyConfig,
) -> (tempfile::TempDir, kube_iap::serve::Running) {
    let port = raw_backend().await;
    let dir = manifests::folder(&[("raw", port)]);
    write(
        dir.path(),
        "p.yaml",
        &manifests::policy("raw", "raw.test", "raw", &["allUsers"]),
    );
    let server = support::start_server_with(dir.path(), config).await;
    (dir, server)
}

#[tokio::test]
async fn chunked_close_delimited_informational_and_head_responses_arrive_whole() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let http = server.http_addr.unwrap();

    let chunked = get(http, "raw.test", "/chunked", &[]).await;
    assert_eq!(
        (chunked.status.as_u16(), chunked.text().as_str()),
        (200, "hello world")
    );
    let after = get(http, "raw.test", "/plain", &[]).await;
    assert_eq!(
        after.header("x-conn"),
        chunked.header("x-conn"),
        "a chunked body read to its end leaves the connection reusable"
    );

    let until_close = get(http, "raw.test", "/until-close", &[]).await;
    assert_eq!(until_close.text(), "read to the end");
    let after = get(http, "raw.test", "/plain", &[]).await;
    assert_eq!(after.text(), "plain");
    assert_ne!(after.header("x-conn"), until_close.header("x-conn"));

    let hinted = get(http, "raw.test", "/early-hints", &[]).await;
    assert_eq!(
        (hinted.status.as_u16(), hinted.text().as_str()),
        (200, "final")
    );

    let head = send(http, "HEAD", "raw.test", "/head", &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"));
    assert!(head.body.is_empty());
    let after = get(http, "raw.test", "/plain", &[]).await;
    assert_eq!(
        after.header("x-conn"),
        head.header("x-conn"),
        "HEAD reads no body"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn responses_that_break_http_framing_get_a_502_page_and_break_nothing_else() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let http = server.http_addr.unwrap();
    for path in ["/two-lengths", "/not-http"] {
        let reply = get(http, "raw.test", path, &[]).await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.text());
        assert_eq!(reply.header("x-kube-iap-generated-response"), Some("true"));
        assert!(
            !reply.text().contains("abc"),
            "nothing of the bad response leaks"
        );
    }
    assert_eq!(get(http, "raw.test", "/plain", &[]).await.text(), "plain");
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_not_passed_off_as_complete() {
    let (_dir, server) = proxy_to_raw_backend().await;
    let http = server.http_addr.unwrap();
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"GET /truncated HTTP/1.1\r\nhost: raw.test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let _closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut received),
    )
    .await
    .expect("the proxy ends the connection instead of waiting forever");
    // The proxy sends what the upstream sent, then ends the connection (with a reset when the
    // head was all the client got): short of the announced length either way, so the client can
    // tell the body is incomplete.
    let text = String::from_utf8_lossy(&received);
    if let Some((head, body)) = text.split_once("\r\n\r\n") {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-length: 100"), "{head}");
        assert!("only this".starts_with(body), "{body}");
    }
    assert_eq!(get(http, "raw.test", "/plain", &[]).await.text(), "plain");
    server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_gets_a_504_on_pooled_and_fresh_connections() {
    let timeout = std::time::Duration::from_millis(700);
    let (_dir, server) = proxy_to_raw_backend_with(kube_iap::proxy::ProxyConfig {
        access_log: false,
        workers: 1,
        response_timeout: timeout,
        ..Default::default()
    })
    .await;
    let http = server.http_addr.expect("http listener");

    // The first answer leaves connection 0 pooled, its timer holding that exchange's deadline.
    let plain = get(http, "raw.test", "/plain", &[]).await;
    assert_eq!(plain.header("x-conn"), Some("0"), "{}", plain.text());
    for attempt in ["pooled connection 0", "fresh connection 1"] {
        let started = std::time::Instant::now();
        let stalled = get(http, "raw.test", "/stall", &[]).await;
        let took = started.elapsed();
        assert_eq!(stalled.status, 504, "{attempt}: {}", stalled.text());
        assert_eq!(
            stalled.header("x-kube-iap-generated-response"),
            Some("true")
        );
        assert!(
            took >= timeout && took < timeout + std::time::Duration::from_secs(5),
            "{attempt}: answered after {took:?}, the timeout is {timeout:?}"
        );
    }
    // A connection that timed out may still get its response: it is never reused.
    let plain = get(http, "raw.test", "/plain", &[]).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("x-conn"), Some("2"));
    assert_eq!(plain.body, Bytes::from_static(b"plain"));
    server.shutdown().await;
}
