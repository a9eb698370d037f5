//! The proxy end to end: a server started from a manifests folder, real backends on loopback.

use crate::support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::manifests::{self, write};
use support::{backends, get, send, start_server};

/// A folder with a healthy client, an open `public.test` and a protected `private.test`, both
/// served by one echo backend.
async fn standard_world() -> (tempfile::TempDir, std::net::SocketAddr) {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "policies.yaml",
        &format!(
            "{}---\n{}",
            manifests::policy("public", "public.test", "web", &["allUsers"]),
            manifests::policy("private", "private.test", "web", &["allAuthenticatedUsers"])
        ),
    );
    (dir, backend)
}

#[tokio::test]
async fn an_all_users_route_forwards_with_the_normalised_path_and_forwarding_headers() {
    let (dir, _backend) = standard_world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.expect("http listener");

    let reply = get(
        http,
        "Public.Test:8080",
        "/a/../b//c%2Fd?x=1&y=%2F",
        &[("cookie", "app=1")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["backend"], "web");
    assert_eq!(echo["path"], "/b/c/d");
    assert_eq!(echo["query"], "x=1&y=%2F");
    assert_eq!(echo["headers"]["host"], "Public.Test:8080");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(
        echo["headers"]["cookie"], "app=1",
        "the app's own cookies pass untouched"
    );
    assert!(echo["headers"]["x-request-id"].is_string());
    assert_eq!(reply.header("set-cookie"), Some("app_session=kept; Path=/"));
    assert!(
        reply.header("x-kube-iap-generated-response").is_none(),
        "a forwarded response is not generated"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_backend() {
    let (dir, _backend) = standard_world().await;
    let server = start_server(dir.path()).await;
    let reply = get(
        server.http_addr.unwrap(),
        "public.test",
        "/",
        &support::with_spoofed_identity(&[
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "x-custom-hop"),
            ("x-custom-hop", "1"),
        ]),
    )
    .await;
    let headers = &reply.json()["headers"];
    support::assert_no_spoofed_identity(headers);
    for name in [
        "x-kube-iap-authenticated-user-email",
        "x-kube-iap-jwt-assertion",
        "x-goog-authenticated-user-email",
        "x-goog-iap-jwt-assertion",
        "x-custom-hop",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the backend: {headers}"
        );
    }
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "a client cannot plant its address"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_a_client_claims_are_replaced_with_and_without_a_body() {
    let (dir, _backend) = standard_world().await;
    let server = start_server(dir.path()).await;
    let claimed = [
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=10.1.2.3;proto=https"),
        ("x-request-id", "chosen-by-the-client"),
    ];
    // Without a body the lean client writes the head itself; with one, hyper's client sends
    // the header map: both must say the same.
    for (method, body) in [("GET", ""), ("POST", "a body")] {
        let reply = send(
            server.http_addr.unwrap(),
            method,
            "public.test",
            "/",
            &claimed,
            Bytes::from(body),
        )
        .await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        let headers = &reply.json()["headers"];
        assert_eq!(
            headers["x-forwarded-for"], "127.0.0.1",
            "{method}: {headers}"
        );
        assert_eq!(headers["x-forwarded-proto"], "http", "{method}: {headers}");
        assert_eq!(
            headers["x-forwarded-host"], "public.test",
            "{method}: {headers}"
        );
        assert!(headers.get("forwarded").is_none(), "{method}: {headers}");
        let request_id = headers["x-request-id"].as_str().expect("a request id");
        assert!(
            !request_id.contains("chosen") && !request_id.contains(','),
            "{method}: one id, kube-iap's: {request_id}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_protected_route_fails_closed_with_401_and_generated_pages_follow_accept() {
    let (dir, _backend) = standard_world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();

    let json = get(
        http,
        "private.test",
        "/secret",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(json.status, 401);
    assert_eq!(
        json.header("www-authenticate"),
        Some("Bearer realm=\"kube-iap\"")
    );
    assert_eq!(json.header("x-kube-iap-generated-response"), Some("true"));
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json.json()["error"]["status"], 401);

    let html = get(
        http,
        "private.test",
        "/secret",
        &[
            ("accept", "text/html,application/xhtml+xml"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
    )
    .await;
    assert_eq!(html.status, 401);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text().contains("Authentication required"));

    let post = send(
        http,
        "POST",
        "private.test",
        "/form",
        &[],
        Bytes::from_static(b"a=1"),
    )
    .await;
    assert_eq!(post.status, 401);

    let missing = get(http, "nobody.test", "/", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("x-kube-iap-generated-response"),
        Some("true")
    );

    let reserved = get(http, "public.test", "/_iap/nothing", &[]).await;
    assert_eq!(reserved.status, 404, "reserved paths are never forwarded");
    assert_eq!(
        reserved.header("x-kube-iap-generated-response"),
        Some("true")
    );

    let bad = get(http, "public.test", "/a%00b", &[]).await;
    assert_eq!(bad.status, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn backend_failures_get_502_and_503_pages() {
    let closed = backends::closed_port().await;
    let dir = manifests::folder(&[("down", closed)]);
    write(
        dir.path(),
        "p1.yaml",
        &manifests::policy("down", "down.test", "down", &["allUsers"]),
    );
    write(
        dir.path(),
        "empty.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {ports: [{port: 80}]}\n",
    );
    write(
        dir.path(),
        "p2.yaml",
        &manifests::policy("empty", "empty.test", "empty", &["allUsers"]),
    );
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();

    let down = get(http, "down.test", "/", &[]).await;
    assert_eq!(down.status, 502, "{}", down.text());
    assert_eq!(down.header("x-kube-iap-generated-response"), Some("true"));
    let empty = get(http, "empty.test", "/", &[("accept", "text/html")]).await;
    assert_eq!(empty.status, 503);
    assert!(empty.text().contains("no ready instance"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_oauth_client_fails_its_routes_closed_with_code_7_without_leaking_the_secret() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "client.yaml",
        &manifests::oauth_client().replace("clientId: test-client", "clientId: \"\""),
    );
    write(
        dir.path(),
        "p.yaml",
        &manifests::policy("app", "app.test", "web", &["allUsers"]),
    );
    let server = start_server(dir.path()).await;

    let reply = get(
        server.http_addr.unwrap(),
        "app.test",
        "/",
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("Error code 7"), "{}", reply.text());
    assert!(!reply.text().contains("do-not-leak-this"));

    let status = get(server.admin_addr, "admin", "/status", &[]).await.json();
    let text = status.to_string();
    assert!(
        !text.contains("do-not-leak-this"),
        "the secret never appears in /status"
    );
    let find = |kind: &str, name: &str| {
        status["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name} in {status}"))
    };
    assert_eq!(find("OAuthClient", "idp")["status"]["errorCode"], 7);
    assert_eq!(find("IapPolicy", "app")["status"]["errorCode"], 7);
    let message = find("IapPolicy", "app")["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with("Error code 7:"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let ws_backend = backends::websocket_echo().await;
    let dir = manifests::folder(&[("ws", ws_backend.port())]);
    write(
        dir.path(),
        "p.yaml",
        &manifests::policy("ws", "ws.test", "ws", &["allUsers"]),
    );
    let server = start_server(dir.path()).await;

    let stream = tokio::net::TcpStream::connect(server.http_addr.unwrap())
        .await
        .unwrap();
    let request = support::websocket_request("ws://ws.test/socket", "ws.test", &[]);
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade through the proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", "again"] {
        socket.send(text.into()).await.unwrap();
        let reply = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(reply.to_text().unwrap(), format!("echo:{text}"));
    }
    socket.close(None).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_a_closed_one_is_replaced_transparently() {
    let (dir, _backend) = standard_world().await;
    // One worker, one pool: sequential requests must share a connection.
    let config = kube_iap::proxy::ProxyConfig {
        access_log: false,
        workers: 1,
        ..Default::default()
    };
    let server = support::start_server_with(dir.path(), config).await;
    let http = server.http_addr.unwrap();

    let peers: Vec<String> = {
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(
                get(http, "public.test", "/", &[]).await.json()["peer"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        peers
    };
    assert!(
        peers.windows(2).all(|pair| pair[0] == pair[1]),
        "one upstream connection reused: {peers:?}"
    );

    // The backend closes the connection after this answer; the next request must not fail on it.
    let closing = get(http, "public.test", "/", &[("x-test-close", "1")]).await;
    assert_eq!(closing.status, 200);
    for _ in 0..3 {
        let reply = get(http, "public.test", "/", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_ne!(
            reply.json()["peer"],
            closing.json()["peer"],
            "a fresh connection replaced the closed one"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn cors_preflights_get_405_unless_the_policy_lets_them_through() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    let members = &["allAuthenticatedUsers"];
    let open_preflight = format!(
        "{}  cors: {{allowHttpOptions: true}}\n",
        manifests::policy("cors", "cors.test", "web", members)
    );
    write(
        dir.path(),
        "strict.yaml",
        &manifests::policy("strict", "strict.test", "web", members),
    );
    write(dir.path(), "cors.yaml", &open_preflight);
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let preflight = [
        ("origin", "https://spa.example.com"),
        ("access-control-request-method", "POST"),
    ];

    let refused = send(
        http,
        "OPTIONS",
        "strict.test",
        "/api",
        &preflight,
        Bytes::new(),
    )
    .await;
    assert_eq!(refused.status, 405);
    assert_eq!(
        refused.header("x-kube-iap-generated-response"),
        Some("true")
    );
    assert!(
        refused.text().contains("credentials: 'include'"),
        "{}",
        refused.text()
    );

    let forwarded = send(
        http,
        "OPTIONS",
        "cors.test",
        "/api",
        &preflight,
        Bytes::new(),
    )
    .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text());
    assert_eq!(forwarded.json()["method"], "OPTIONS");

    // Only a real preflight passes: a plain OPTIONS, or any other method, still needs credentials.
    assert_eq!(
        send(http, "OPTIONS", "cors.test", "/api", &[], Bytes::new())
            .await
            .status,
        401
    );
    assert_eq!(
        send(http, "POST", "cors.test", "/api", &preflight, Bytes::new())
            .await
            .status,
        401
    );
    let unauthorized = get(http, "cors.test", "/", &[("accept", "*/*")]).await;
    assert!(unauthorized.text().contains("Authorization: Bearer"));
    server.shutdown().await;
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout_without_new_traffic() {
    let (backend, open) = backends::echo_counting("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "p.yaml",
        &manifests::policy("app", "app.test", "web", &["allUsers"]),
    );
    let config = kube_iap::proxy::ProxyConfig {
        access_log: false,
        workers: 1,
        pool_idle_timeout: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let server = support::start_server_with(dir.path(), config).await;
    assert_eq!(
        get(server.http_addr.unwrap(), "app.test", "/", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        open.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the pooled connection stays open"
    );
    support::eventually("the idle connection to be closed", || async {
        open.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    server.shutdown().await;
}

/// Over HTTP/2 the host is the request's `:authority`; a `host` header beside it naming
/// another host must not reach the backend, which would then serve a host policy never saw.
#[tokio::test]
async fn the_backend_is_told_the_host_policy_was_decided_for() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (dir, _backend) = standard_world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.expect("http listener");
    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an h2c connection");
    tokio::spawn(connection);
    let request = http::Request::get("http://public.test/where")
        .header("host", "private.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(echo["headers"]["host"], "public.test", "{echo}");
    server.shutdown().await;
}
