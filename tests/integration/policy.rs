//! The policy language through the running proxy: conditions, deny rules and the 403 that says
//! why, with session cookies minted from the server's own key.

use crate::support;

use support::manifests::{self, write};
use support::{backends, get, send, start_server};

const KEY: [u8; 32] = [3; 32];

fn cookie(email: &str, groups: &[&str]) -> String {
    support::sessions::cookie(KEY, "app.test", email, groups, 600)
}

#[tokio::test]
async fn conditions_and_deny_rules_decide_and_the_403_says_why() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "keys.yaml",
        &manifests::session_keys(&[("k", KEY)]),
    );
    write(
        dir.path(),
        "policy.yaml",
        r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: app, namespace: default}
spec:
  oauthClientRef: {name: idp}
  hosts: [app.test]
  backend: {service: web, port: 80}
  access:
    - members: ["domain:example.com"]
      when: {methods: [GET], paths: [/docs]}
    - members: ["group:admins"]
      when: {sourceCidrs: ["127.0.0.0/8"]}
    - members: ["group:remote-admins"]
      when: {sourceCidrs: ["10.0.0.0/8"]}
  deny:
    - members: ["user:fired@example.com"]
"#,
    );
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let call = |method: &'static str, path: &'static str, cookie: String| async move {
        send(
            http,
            method,
            "app.test",
            path,
            &[("cookie", &cookie), ("accept", "application/json")],
            bytes::Bytes::new(),
        )
        .await
    };
    assert_eq!(
        call("GET", "/docs/a", cookie("ann@example.com", &[]))
            .await
            .status,
        200
    );
    let wrong_method = call("POST", "/docs/a", cookie("ann@example.com", &[])).await;
    assert_eq!(wrong_method.status, 403);
    let error = &wrong_method.json()["error"];
    assert_eq!(error["policy"], "default/app");
    assert_eq!(error["identity"], "ann@example.com");
    assert!(
        error["reason"].as_str().unwrap().contains("spec.access[0]")
            && error["reason"].as_str().unwrap().contains("when.methods"),
        "{error}"
    );
    // The peer is 127.0.0.1 and no proxy is trusted, so X-Forwarded-For changes nothing.
    assert_eq!(
        call("DELETE", "/", cookie("root@corp.com", &["admins"]))
            .await
            .status,
        200
    );
    let spoofed = send(
        http,
        "GET",
        "app.test",
        "/",
        &[
            ("cookie", &cookie("ops@corp.com", &["remote-admins"])),
            ("x-forwarded-for", "10.9.9.9"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(spoofed.status, 403, "a client cannot choose its address");
    let fired = call("GET", "/docs/a", cookie("fired@example.com", &[])).await;
    assert_eq!(fired.status, 403);
    assert!(
        fired.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("spec.deny[0]")
    );
    let html = get(
        http,
        "app.test",
        "/",
        &[
            ("cookie", &cookie("x@other.org", &[])),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(html.status, 403);
    let page = html.text();
    assert!(
        page.contains("x@other.org")
            && page.contains("default/app")
            && page.contains("No access rule")
    );
    assert!(page.contains("/_iap/clear_login_cookie"));
    // The page carries this request's id (to quote to support) and nothing about who else
    // the policy admits.
    let request_id = html
        .header("x-request-id")
        .expect("generated responses carry an id");
    assert!(page.contains(&format!("request {request_id}")), "{page}");
    assert_eq!(
        wrong_method.json()["error"]["requestId"],
        wrong_method.header("x-request-id").unwrap()
    );
    for other in [
        "example.com",
        "admins",
        "remote-admins",
        "fired@",
        "10.0.0.0/8",
    ] {
        assert!(!page.contains(other), "the 403 page names {other}: {page}");
    }

    // `kube-iap explain` reaches the same decisions as the proxy, and says which rule decided.
    for (email, groups, method, path) in [
        ("ann@example.com", &[][..], "GET", "/docs/a"),
        ("ann@example.com", &[], "POST", "/docs/a"),
        ("root@corp.com", &["admins"], "DELETE", "/"),
        ("fired@example.com", &[], "GET", "/docs/a"),
        ("x@other.org", &[], "GET", "/"),
    ] {
        let proxy = send(
            http,
            method,
            "app.test",
            path,
            &[("cookie", &cookie(email, groups))],
            bytes::Bytes::new(),
        )
        .await;
        let explained = kube_iap::explain::explain(&kube_iap::explain::Question {
            manifests: dir.path().to_path_buf(),
            url: format!("https://app.test{path}"),
            user: Some(email.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            service_account: None,
            method: method.into(),
            from: "127.0.0.1".parse().unwrap(),
            at: chrono::Utc::now().timestamp(),
        })
        .unwrap();
        assert_eq!(
            explained.allowed,
            proxy.status == 200,
            "{email} {method} {path}: proxy said {}, explain said:\n{}",
            proxy.status,
            explained.report
        );
        assert!(
            explained.report.contains("IapPolicy default/app"),
            "{}",
            explained.report
        );
    }
    let denied = kube_iap::explain::explain(&kube_iap::explain::Question {
        manifests: dir.path().to_path_buf(),
        url: "https://app.test/docs/a".into(),
        user: Some("ann@example.com".into()),
        groups: vec![],
        service_account: None,
        method: "POST".into(),
        from: "127.0.0.1".parse().unwrap(),
        at: chrono::Utc::now().timestamp(),
    })
    .unwrap();
    assert!(
        denied
            .report
            .contains("spec.access[0]: domain:example.com matches, but when.methods does not hold")
            && denied.report.contains("DENY (403)"),
        "{}",
        denied.report
    );
    server.shutdown().await;
}

#[tokio::test]
async fn over_the_rate_limit_requests_get_429_with_retry_after_before_any_authentication() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    let limited = |name: &str, host: &str, members: &str| {
        format!(
            "apiVersion: kube-iap.io/v1alpha1\nkind: IapPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  oauthClientRef: {{name: idp}}\n  hosts: [{host}]\n  backend: {{service: web, port: 80}}\n  access: [{{members: [{members}]}}]\n  rateLimit: {{requestsPerMinute: 5}}\n"
        )
    };
    write(
        dir.path(),
        "open.yaml",
        &limited("open", "open.test", "allUsers"),
    );
    write(
        dir.path(),
        "closed.yaml",
        &limited("closed", "closed.test", "\"domain:example.com\""),
    );
    let server = support::start_server_with(
        dir.path(),
        kube_iap::proxy::ProxyConfig {
            access_log: false,
            sign_in_per_minute: 3,
            ..kube_iap::proxy::ProxyConfig::default()
        },
    )
    .await;
    let http = server.http_addr.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(get(http, "open.test", "/", &[]).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let refused = get(http, "open.test", "/", &[("accept", "application/json")]).await;
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.json()["error"]["errorCode"], 429);
    // Each policy has its own budget, and it is spent before any authentication: over it, a
    // request with credentials gets 429, never a 401 from checking them.
    let mut with_credentials = Vec::new();
    for _ in 0..7 {
        let reply = get(
            http,
            "closed.test",
            "/",
            &[
                ("authorization", "Bearer x"),
                ("accept", "application/json"),
            ],
        )
        .await;
        with_credentials.push(reply.status.as_u16());
    }
    assert_eq!(with_credentials, [401, 401, 401, 401, 401, 429, 429]);
    let metrics = get(server.admin_addr, "admin", "/metrics", &[])
        .await
        .text();
    assert!(
        metrics.contains("kube_iap_rate_limited_total{route=\"default/open\"} 4"),
        "{metrics}"
    );

    // Sign-in redirects are limited per client address (here the provider is down, so each
    // attempt is a code-11 page; the fourth is refused before trying).
    let mut sign_ins = Vec::new();
    for _ in 0..4 {
        sign_ins.push(
            get(http, "closed.test", "/page", &[("accept", "text/html")])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(sign_ins[3], 429, "{sign_ins:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn sign_in_callbacks_are_limited_per_client_address() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "web", &["domain:example.com"]),
    );
    let server = support::start_server_with(
        dir.path(),
        kube_iap::proxy::ProxyConfig {
            access_log: false,
            sign_in_per_minute: 2,
            ..kube_iap::proxy::ProxyConfig::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = get(
            server.http_addr.unwrap(),
            "app.test",
            "/_iap/callback?code=flood&state=flood",
            &[("accept", "text/html")],
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert!(statuses[..2].iter().all(|s| *s != 429), "{statuses:?}");
    assert_eq!(statuses[2], 429, "{statuses:?}");
    server.shutdown().await;
}

/// A folder where `app.test` (HTTP echo) and `ws.test` (WebSocket echo) admit `members`.
async fn live_world(members: &str) -> (tempfile::TempDir, [std::net::SocketAddr; 2]) {
    let http_backend = backends::echo("web").await;
    let ws_backend = backends::websocket_echo().await;
    let dir = manifests::folder(&[("web", http_backend.port()), ("ws", ws_backend.port())]);
    write(
        dir.path(),
        "keys.yaml",
        &manifests::session_keys(&[("k", KEY)]),
    );
    write_live_policies(dir.path(), members);
    (dir, [http_backend, ws_backend])
}

fn write_live_policies(dir: &std::path::Path, members: &str) {
    write(
        dir,
        "policy.yaml",
        &format!(
            "{}---\n{}",
            manifests::policy("app", "app.test", "web", &[members]),
            manifests::policy("ws", "ws.test", "ws", &[members])
        ),
    );
}

/// One request on an already open connection; returns the status code.
async fn status_on(stream: &mut tokio::net::TcpStream, cookie: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nCookie: {cookie}\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection closed");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_revoked_member_is_refused_on_a_kept_alive_connection_and_its_websocket_closes() {
    use futures_util::{SinkExt, StreamExt};
    let (dir, _backends) = live_world("domain:example.com").await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let ann = |host: &str| support::sessions::cookie(KEY, host, "ann@example.com", &[], 600);

    let mut kept_alive = tokio::net::TcpStream::connect(http).await.unwrap();
    assert_eq!(status_on(&mut kept_alive, &ann("app.test")).await, 200);

    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let request = support::websocket_request(
        "ws://ws.test/socket",
        "ws.test",
        &[("cookie", ann("ws.test"))],
    );
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("an admitted user upgrades");
    assert_eq!(response.status(), 101);
    socket.send("hello".into()).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().to_text().unwrap(),
        "echo:hello"
    );

    // Revoke: only another domain is admitted now.
    let generation = server.published.report.load().generation;
    write_live_policies(dir.path(), "domain:other.org");
    let report = &server.published.report;
    support::eventually("the change is published", || async {
        report.load().generation > generation
    })
    .await;
    assert_eq!(
        status_on(&mut kept_alive, &ann("app.test")).await,
        403,
        "the next request on the same connection is decided by the new policy"
    );
    assert!(
        closes_within(&mut socket, 5).await,
        "the WebSocket stays open after revocation"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_websocket_closes_when_its_session_expires() {
    use futures_util::{SinkExt, StreamExt};
    let (dir, _backends) = live_world("domain:example.com").await;
    let server = start_server(dir.path()).await;
    let stream = tokio::net::TcpStream::connect(server.http_addr.unwrap())
        .await
        .unwrap();
    let short_lived = support::sessions::cookie(KEY, "ws.test", "ann@example.com", &[], 2);
    let request =
        support::websocket_request("ws://ws.test/socket", "ws.test", &[("cookie", short_lived)]);
    let opened = std::time::Instant::now();
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("a signed-in user upgrades");
    socket.send("hello".into()).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().to_text().unwrap(),
        "echo:hello"
    );
    assert!(
        closes_within(&mut socket, 6).await,
        "the WebSocket outlives its session"
    );
    // Seconds are whole on the cookie, so the session ends one to two seconds after opening.
    assert!(
        opened.elapsed() >= std::time::Duration::from_millis(900),
        "closed after {:?}, before the session ended",
        opened.elapsed()
    );
    server.shutdown().await;
}

/// Whether the proxy closes `socket` (a close frame, an error or the end) within `seconds`.
async fn closes_within<S>(socket: &mut S, seconds: u64) -> bool
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(seconds), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}
