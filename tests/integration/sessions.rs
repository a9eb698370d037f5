//! Session cookies end to end: minted with the key ring the server reads from its Secret, then
//! admitted or refused by the policy, and turned into identity headers for the backend.

use crate::support;
use bytes::Bytes;

use kube_iap::auth::session::{KeyRing, Session};
use support::manifests::{self, write};
use support::{backends, eventually, get, send, start_server};

const OLD_KEY: [u8; 32] = [11; 32];
const NEW_KEY: [u8; 32] = [22; 32];

fn keys_secret(entries: &[(&str, [u8; 32])]) -> String {
    manifests::session_keys(entries)
}

fn session(email: &str, verified: bool, expires_in: i64) -> Session {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Session {
        subject: format!("sub-{email}"),
        email: Some(email.to_string()),
        email_verified: verified,
        issuer: "http://127.0.0.1:1".into(),
        groups: vec![],
        expires_at: (now + expires_in) as u64,
    }
}

fn cookie(ring: &KeyRing, session: &Session, host: &str) -> String {
    format!(
        "KUBE_IAP_AUTH_TOKEN_t={}",
        ring.seal(session, host).expect("seal")
    )
}

/// `app.test` admits `domain:example.com`, with `/health` public.
async fn world() -> (tempfile::TempDir, std::net::SocketAddr) {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "keys.yaml",
        &keys_secret(&[("2026-01", OLD_KEY)]),
    );
    let policy = format!(
        "{}  publicPaths: [/health]\n",
        manifests::policy("app", "app.test", "web", &["domain:example.com"])
    );
    write(dir.path(), "policy.yaml", &policy);
    (dir, backend)
}

#[tokio::test]
async fn a_valid_session_is_admitted_and_the_backend_learns_who_it_is() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let ring = KeyRing::new(&[OLD_KEY]);
    let alice = cookie(&ring, &session("alice@example.com", true, 3600), "app.test");

    // Without a body the lean client writes the identity into the head; with one, hyper's
    // client sends the header map: the backend must learn the same either way.
    let cookies = format!("theme=dark; {alice}; KUBE_IAP_UID=u1");
    for (method, body) in [("GET", ""), ("POST", "a body")] {
        let reply = send(
            server.http_addr.unwrap(),
            method,
            "app.test:8080",
            "/page",
            &support::with_spoofed_identity(&[("cookie", &cookies)]),
            Bytes::from(body),
        )
        .await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        let headers = &reply.json()["headers"];
        support::assert_no_spoofed_identity(headers);
        assert_eq!(
            headers["x-kube-iap-authenticated-user-email"], "alice@example.com",
            "{method}"
        );
        assert_eq!(
            headers["x-kube-iap-authenticated-user-id"], "sub-alice@example.com",
            "{method}"
        );
        let assertion = headers["x-kube-iap-jwt-assertion"].as_str().unwrap_or("");
        assert_eq!(
            assertion.split('.').count(),
            3,
            "{method}: a JWT: {assertion}"
        );
        assert_eq!(
            headers["cookie"], "theme=dark",
            "{method}: proxy cookies never reach the backend"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn any_one_valid_copy_of_the_cookie_authenticates_in_either_order() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let valid = cookie(
        &KeyRing::new(&[OLD_KEY]),
        &session("alice@example.com", true, 3600),
        "app.test",
    );
    let garbage = "KUBE_IAP_AUTH_TOKEN_x=v1.nope.AAAA";
    for cookies in [format!("{garbage}; {valid}"), format!("{valid}; {garbage}")] {
        let reply = get(
            server.http_addr.unwrap(),
            "app.test",
            "/",
            &[("cookie", &cookies)],
        )
        .await;
        assert_eq!(reply.status, 200, "{cookies}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn forged_foreign_expired_and_unknown_key_cookies_are_refused() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let ring = KeyRing::new(&[OLD_KEY]);
    let alice = session("alice@example.com", true, 3600);

    let good = cookie(&ring, &alice, "app.test");
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
    let cases = [
        ("tampered", String::from_utf8(tampered).unwrap()),
        (
            "minted for another host",
            cookie(&ring, &alice, "other.test"),
        ),
        (
            "expired",
            cookie(&ring, &session("alice@example.com", true, -5), "app.test"),
        ),
        (
            "sealed with a key the server does not hold",
            cookie(&KeyRing::new(&[[99; 32]]), &alice, "app.test"),
        ),
    ];
    for (case, value) in cases {
        let reply = get(
            http,
            "app.test",
            "/",
            &[("cookie", &value), ("accept", "application/json")],
        )
        .await;
        assert_eq!(reply.status, 401, "{case}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"kube-iap\""),
            "{case}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_signed_in_user_outside_the_policy_gets_403_naming_them() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let ring = KeyRing::new(&[OLD_KEY]);
    for (email, verified) in [
        ("mallory@evil.com", true),
        ("unverified@example.com", false),
        ("x@example.com.evil.com", true),
    ] {
        let value = cookie(&ring, &session(email, verified, 3600), "app.test");
        let reply = get(
            http,
            "app.test",
            "/",
            &[("cookie", &value), ("accept", "text/html")],
        )
        .await;
        assert_eq!(reply.status, 403, "{email}");
        assert_eq!(reply.header("x-kube-iap-generated-response"), Some("true"));
        assert!(
            reply.text().contains(email),
            "the page names who is signed in"
        );
        assert!(reply.text().contains("/_iap/clear_login_cookie"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn public_paths_carry_no_identity_even_for_a_signed_in_user() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let value = cookie(
        &KeyRing::new(&[OLD_KEY]),
        &session("alice@example.com", true, 3600),
        "app.test",
    );
    let reply = get(
        server.http_addr.unwrap(),
        "app.test",
        "/health",
        &support::with_spoofed_identity(&[("cookie", &value)]),
    )
    .await;
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    support::assert_no_spoofed_identity(headers);
    assert!(
        headers.get("x-kube-iap-authenticated-user-email").is_none(),
        "{headers}"
    );
    assert!(
        headers.get("cookie").is_none(),
        "the session cookie is stripped there too"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn identity_endpoint_and_sign_out() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    // Someone the policy denies can still see who they are signed in as.
    let value = cookie(
        &KeyRing::new(&[OLD_KEY]),
        &session("mallory@evil.com", true, 3600),
        "app.test",
    );
    let identity = get(http, "app.test", "/_iap/identity", &[("cookie", &value)]).await;
    assert_eq!(identity.status, 200);
    assert_eq!(identity.json()["email"], "mallory@evil.com");
    assert_eq!(identity.json()["sub"], "sub-mallory@evil.com");
    assert_eq!(
        get(http, "app.test", "/_iap/identity", &[]).await.status,
        401
    );

    let signed_out = get(
        http,
        "app.test",
        "/_iap/clear_login_cookie",
        &[("cookie", &format!("{value}; KUBE_IAP_UID=u; app=1"))],
    )
    .await;
    // The test provider is down, so there is no provider session to end: a signed-out page.
    assert_eq!(signed_out.status, 200);
    let cleared: Vec<&str> = signed_out
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    // Both cookies sent, plus this host's own session cookie name.
    assert_eq!(cleared.len(), 3, "{cleared:?}");
    for name in ["KUBE_IAP_AUTH_TOKEN_t=", "KUBE_IAP_UID="] {
        assert!(cleared.iter().any(|c| c.starts_with(name)), "{cleared:?}");
    }
    assert!(
        cleared
            .iter()
            .all(|c| c.contains("Max-Age=0") && c.starts_with("KUBE_IAP_"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn adding_a_session_key_logs_nobody_out() {
    let (dir, _backend) = world().await;
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let alice = session("alice@example.com", true, 3600);
    let old_cookie = cookie(&KeyRing::new(&[OLD_KEY]), &alice, "app.test");
    let new_cookie = cookie(&KeyRing::new(&[NEW_KEY]), &alice, "app.test");
    assert_eq!(
        get(http, "app.test", "/", &[("cookie", &new_cookie)])
            .await
            .status,
        401,
        "not yet known"
    );

    write(
        dir.path(),
        "keys.yaml",
        &keys_secret(&[("2026-01", OLD_KEY), ("2026-02", NEW_KEY)]),
    );
    eventually("the new key", || async {
        get(http, "app.test", "/", &[("cookie", &new_cookie)])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(
        get(http, "app.test", "/", &[("cookie", &old_cookie)])
            .await
            .status,
        200,
        "old sessions still open"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn google_compatible_headers_for_every_route_come_from_one_flag() {
    let (dir, _backend) = world().await;
    let ring = KeyRing::new(&[OLD_KEY]);
    let alice = cookie(&ring, &session("alice@example.com", true, 3600), "app.test");
    let spoofed = (
        "x-goog-authenticated-user-email",
        "kube-iap:ceo@example.com",
    );
    let headers_seen = |server: kube_iap::serve::Running| {
        let alice = alice.clone();
        async move {
            let reply = get(
                server.http_addr.unwrap(),
                "app.test",
                "/",
                &[("cookie", alice.as_str()), spoofed],
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            server.shutdown().await;
            reply.json()["headers"].clone()
        }
    };

    // The policy does not ask for Google's headers: by default none reach the backend.
    let plain = headers_seen(start_server(dir.path()).await).await;
    assert!(plain.get("x-goog-authenticated-user-email").is_none());

    let flagged = support::start_server_with(
        dir.path(),
        kube_iap::proxy::ProxyConfig {
            access_log: false,
            google_compatible_headers: true,
            ..kube_iap::proxy::ProxyConfig::default()
        },
    )
    .await;
    let seen = headers_seen(flagged).await;
    assert_eq!(
        seen["x-goog-authenticated-user-email"],
        "kube-iap:alice@example.com"
    );
    assert_eq!(
        seen["x-goog-authenticated-user-id"],
        "kube-iap:sub-alice@example.com"
    );
}
