//! Browser sign-in end to end through a real OpenID provider (npm `oidc-provider`): the redirect to
//! the provider, its login form, the callback, the session, and every way the flow can fail.

use crate::support;

use std::time::Duration;

use kube_iap::serve::Running;
use support::browser::{Browser, resolve};
use support::manifests::{self, write};
use support::{Reply, backends, eventually, forging_idp, get, idp, send, start_server};

const SESSION_KEY: [u8; 32] = [42; 32];

struct World {
    _dir: tempfile::TempDir,
    server: Running,
    /// `http://app.test:PORT`: admits `domain:example.com` and `group:engineering`.
    app: String,
    /// `http://team.test:PORT`: admits `group:engineering` only; sessions last two hours.
    team: String,
}

fn session_keys() -> String {
    manifests::session_keys(&[("k1", SESSION_KEY)])
}

async fn world(issuer: &str, client_secret: &str) -> World {
    let backend = backends::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(
            issuer,
            client_secret,
            &["openid", "email", "profile", "groups"],
        ),
    );
    write(dir.path(), "keys.yaml", &session_keys());
    write(
        dir.path(),
        "app.yaml",
        &manifests::service("app", backend.port()),
    );
    write(
        dir.path(),
        "policies.yaml",
        &format!(
            "{}---\n{}  session: {{maxAge: 2h}}\n",
            manifests::policy(
                "app",
                "app.test",
                "app",
                &["domain:example.com", "group:engineering"]
            ),
            manifests::policy("team", "team.test", "app", &["group:engineering"]),
        ),
    );
    let server = start_server(dir.path()).await;
    let port = server.http_addr.unwrap().port();
    World {
        _dir: dir,
        server,
        app: format!("http://app.test:{port}"),
        team: format!("http://team.test:{port}"),
    }
}

async fn real_idp() -> idp::Idp {
    idp::start(&["--groups", "alice@example.com=engineering,unrelated-team"]).await
}

fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect()
}

fn cookie_named<'a>(cookies: &'a [String], prefix: &str) -> &'a str {
    cookies
        .iter()
        .find(|cookie| cookie.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* cookie in {cookies:?}"))
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Signs `login` in on `base` starting from `path`; returns the callback's reply.
async fn sign_in(browser: &mut Browser, base: &str, path: &str, login: &str) -> Reply {
    let start = browser.get(&format!("{base}{path}")).await;
    assert_eq!(start.status, 302, "{}", start.text());
    let provider = start.header("location").unwrap().to_string();
    let callback = browser.sign_in_at_provider(&provider, login).await;
    browser.get(&callback).await
}

#[tokio::test]
async fn sign_in_lands_on_the_deep_link_and_the_backend_learns_who_it_is() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();

    let start = browser
        .get(&format!("{}/deep/link?x=1&y=two", world.app))
        .await;
    assert_eq!(start.status, 302);
    let provider = start.header("location").unwrap().to_string();
    assert!(
        provider.starts_with(&format!("{}/auth?", idp.issuer)),
        "{provider}"
    );
    assert_eq!(
        query_param(&provider, "redirect_uri").as_deref(),
        Some(format!("{}/_iap/callback", world.app).as_str())
    );
    assert_eq!(
        query_param(&provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&provider, "code_challenge").is_some());
    assert!(query_param(&provider, "nonce").is_some_and(|n| n.len() >= 16));
    let state = query_param(&provider, "state").unwrap();
    assert!(state.len() >= 16);
    assert!(
        query_param(&provider, "scope")
            .unwrap()
            .split(' ')
            .any(|scope| scope == "groups")
    );
    let login_cookie = cookie_named(&set_cookies(&start), "KUBE_IAP_LOGIN_").to_string();
    for attribute in [
        "Path=/_iap/callback",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(login_cookie.contains(attribute), "{login_cookie}");
    }
    assert!(
        !login_cookie.contains("Secure"),
        "plain HTTP cannot carry Secure cookies"
    );

    let callback = browser
        .sign_in_at_provider(&provider, "alice@example.com")
        .await;
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(state.as_str())
    );
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.header("location"), Some("/deep/link?x=1&y=two"));
    let cookies = set_cookies(&done);
    let session_cookie = cookie_named(&cookies, "KUBE_IAP_AUTH_TOKEN_");
    for attribute in ["Path=/;", "HttpOnly", "SameSite=Lax", "Max-Age=3600"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    assert!(session_cookie.len() < 4096);
    assert!(cookie_named(&cookies, "KUBE_IAP_UID=").contains("HttpOnly"));
    assert!(
        cookie_named(&cookies, "KUBE_IAP_LOGIN_").contains("Max-Age=0"),
        "the login cookie is used once"
    );

    let landed = browser
        .request(
            "GET",
            &resolve(&world.app, done.header("location").unwrap()),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(landed.status, 200, "{}", landed.text());
    let seen = landed.json();
    assert_eq!(seen["path"], "/deep/link");
    assert_eq!(seen["query"], "x=1&y=two");
    assert_eq!(
        seen["headers"]["x-kube-iap-authenticated-user-email"],
        "alice@example.com"
    );
    assert_eq!(
        seen["headers"]["x-kube-iap-authenticated-user-id"],
        "alice@example.com"
    );
    assert!(
        !seen["headers"]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("KUBE_IAP_"),
        "proxy cookies never reach the app: {}",
        seen["headers"]
    );

    let identity = browser
        .request(
            "GET",
            &format!("{}/_iap/identity", world.app),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(identity.json()["email"], "alice@example.com");
    assert_eq!(identity.json()["issuer"], idp.issuer.as_str());

    // Another host signs in on its own; the provider's session makes it a redirect round trip.
    // team.test admits only group:engineering, which reaches kube-iap through the groups claim.
    let team_start = browser.get(&format!("{}/", world.team)).await;
    let team_callback = browser
        .provider_redirects_to_callback(team_start.header("location").unwrap())
        .await;
    let team_done = browser.get(&team_callback).await;
    assert_eq!(team_done.status, 302);
    assert!(
        cookie_named(&set_cookies(&team_done), "KUBE_IAP_AUTH_TOKEN_").contains("Max-Age=7200"),
        "session.maxAge of the policy sets the session length"
    );
    let team = browser
        .request(
            "GET",
            &format!("{}/", world.team),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(team.status, 200, "{}", team.text());
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_user_outside_the_policy_gets_403_after_signing_in() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    let done = sign_in(&mut browser, &world.team, "/", "bob@example.com").await;
    assert_eq!(done.status, 302);
    let denied = browser.get(&format!("{}/", world.team)).await;
    assert_eq!(denied.status, 403);
    assert!(denied.text().contains("bob@example.com"));
    assert!(denied.text().contains("/_iap/clear_login_cookie"));
    world.server.shutdown().await;
}

#[tokio::test]
async fn two_tabs_sign_in_at_once_and_each_lands_on_its_own_page() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    let tab_one = browser.get(&format!("{}/one", world.app)).await;
    let tab_two = browser.get(&format!("{}/two?tab=2", world.app)).await;
    assert_eq!(
        browser
            .cookies(&world.app)
            .keys()
            .filter(|name| name.starts_with("KUBE_IAP_LOGIN_"))
            .count(),
        2,
        "each login attempt has its own cookie"
    );
    // Tab two finishes first; tab one then rides the provider's session.
    let callback_two = browser
        .sign_in_at_provider(tab_two.header("location").unwrap(), "alice@example.com")
        .await;
    let callback_one = browser
        .provider_redirects_to_callback(tab_one.header("location").unwrap())
        .await;
    let done_two = browser.get(&callback_two).await;
    let done_one = browser.get(&callback_one).await;
    assert_eq!(
        done_two.header("location"),
        Some("/two?tab=2"),
        "{}",
        done_two.text()
    );
    assert_eq!(done_one.header("location"), Some("/one"));
    world.server.shutdown().await;
}

#[tokio::test]
async fn reused_missing_mismatched_and_refused_callbacks_show_code_9() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    let start = browser.get(&format!("{}/", world.app)).await;
    let login_cookie = cookie_named(&set_cookies(&start), "KUBE_IAP_LOGIN_").to_string();
    let (name, value) = login_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap();
    let callback = browser
        .sign_in_at_provider(start.header("location").unwrap(), "alice@example.com")
        .await;
    assert_eq!(browser.get(&callback).await.status, 302);

    let expect_code_9 = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert!(
            reply.text().contains("Error code 9"),
            "{what}: {}",
            reply.text()
        );
        assert_eq!(reply.header("x-kube-iap-generated-response"), Some("true"));
    };
    // Replayed with the login cookie put back: the state was redeemed.
    browser.set_cookie(&world.app, name, value);
    expect_code_9(&browser.get(&callback).await, "reused state");

    // A browser that never started this login.
    expect_code_9(&Browser::new().get(&callback).await, "no login cookie");

    // A state that names this login's cookie but is not its state.
    let mut other = Browser::new();
    let started = other.get(&format!("{}/", world.app)).await;
    let state = query_param(started.header("location").unwrap(), "state").unwrap();
    let forged = format!("{state}x");
    expect_code_9(
        &other
            .get(&format!(
                "{}/_iap/callback?code=abc&state={forged}",
                world.app
            ))
            .await,
        "mismatched state",
    );

    // The provider refused; its words are not echoed into the page.
    let refused = other
        .get(&format!(
            "{}/_iap/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}",
            world.app
        ))
        .await;
    expect_code_9(&refused, "provider error");
    assert!(!refused.text().contains("<script>"));
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_client_secret_the_provider_rejects_shows_code_11_on_the_page_and_the_status() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, "not-the-registered-secret").await;
    let mut browser = Browser::new();
    let done = sign_in(&mut browser, &world.app, "/", "alice@example.com").await;
    assert_eq!(done.status, 502, "{}", done.text());
    assert!(done.text().contains("Error code 11"));
    assert!(!done.text().contains("not-the-registered-secret"));

    let admin = world.server.admin_addr;
    let status = get(admin, "admin", "/status", &[]).await.text();
    assert!(!status.contains("not-the-registered-secret"));
    let report: serde_json::Value = serde_json::from_str(&status).unwrap();
    let client = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|object| object["kind"] == "OAuthClient")
        .unwrap()
        .clone();
    assert_eq!(client["status"]["errorCode"], 11, "{client}");
    assert!(
        client["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{client}"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_client_secret_shows_code_11_before_anyone_signs_in() {
    let idp = real_idp().await;
    let wrong = world(&idp.issuer, "not-the-registered-secret").await;
    let right = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let client_status = |admin| async move {
        let report = get(admin, "admin", "/status", &[]).await.json();
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|object| object["kind"] == "OAuthClient")
            .unwrap()["status"]
            .clone()
    };
    // The probe redeems a code that cannot be valid: invalid_client for the wrong secret.
    eventually("the probe to find the wrong secret", || async {
        client_status(wrong.server.admin_addr).await["errorCode"] == 11
    })
    .await;
    let status = client_status(wrong.server.admin_addr).await;
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("refuses the client ID and secret"),
        "{status}"
    );
    assert!(!status.to_string().contains("not-the-registered-secret"));
    // invalid_grant for the right one: the client stays ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = client_status(right.server.admin_addr).await;
    assert!(status.get("errorCode").is_none(), "{status}");
    // The status also names what discovery found.
    let token_endpoint = status["discovered"]["tokenEndpoint"].as_str().unwrap();
    assert!(token_endpoint.starts_with(&idp.issuer), "{status}");
    assert!(status["discovered"]["jwksUri"].is_string(), "{status}");
    wrong.server.shutdown().await;
    right.server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_provider_gives_code_11_quickly_and_on_the_status() {
    // Port 1 on loopback refuses connections: the provider is down.
    let world = world("http://127.0.0.1:1", "secret").await;
    let mut browser = Browser::new();
    let navigation = tokio::time::timeout(
        Duration::from_secs(10),
        browser.get(&format!("{}/", world.app)),
    )
    .await
    .expect("a down provider never makes a sign-in hang");
    assert_eq!(navigation.status, 502);
    assert!(navigation.text().contains("Error code 11"));

    // Scripts still get their 401, and nobody's session depends on the provider.
    let xhr = send(
        world.server.http_addr.unwrap(),
        "GET",
        "app.test",
        "/",
        &[("accept", "application/json")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(xhr.status, 401);
    let admin = world.server.admin_addr;
    eventually("the OAuthClient status shows code 11", || async {
        get(admin, "admin", "/status", &[])
            .await
            .text()
            .contains("\"errorCode\": 11")
    })
    .await;
    world.server.shutdown().await;
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_or_an_unpublished_key_are_refused_with_code_13() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, "secret").await;
    let try_token = |published_key: bool, right_nonce: bool| {
        let app = world.app.clone();
        let forger = &forger;
        async move {
            let mut browser = Browser::new();
            let start = browser.get(&format!("{app}/")).await;
            let provider = start.header("location").unwrap();
            let state = query_param(provider, "state").unwrap();
            let nonce = query_param(provider, "nonce").unwrap();
            forger.next_token(forging_idp::NextToken {
                nonce: if right_nonce {
                    nonce
                } else {
                    "another-login".into()
                },
                published_key,
                audience: idp::CLIENT_ID.into(),
            });
            browser
                .get(&format!("{app}/_iap/callback?code=c&state={state}"))
                .await
        }
    };
    let wrong_nonce = try_token(true, false).await;
    assert_eq!(wrong_nonce.status, 400);
    assert!(wrong_nonce.text().contains("Error code 13"));
    let foreign_key = try_token(false, true).await;
    assert_eq!(foreign_key.status, 400);
    assert!(foreign_key.text().contains("Error code 13"));
    // The same provider's honest token signs in, so the refusals above are the checks at work.
    let honest = try_token(true, true).await;
    assert_eq!(honest.status, 302, "{}", honest.text());
    world.server.shutdown().await;
}

#[tokio::test]
async fn return_targets_that_could_leave_the_host_land_on_its_root() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    assert_eq!(
        sign_in(&mut browser, &world.app, "/", "alice@example.com")
            .await
            .status,
        302
    );
    let http = world.server.http_addr.unwrap();
    let authority = format!("app.test:{}", http.port());
    let mut signed_in_from = Vec::new();
    for target in [
        "//evil.example/x",
        "/%2F%2Fevil.example",
        "/%2f/evil.example",
        "/%5Cevil.example",
        "/%09/evil.example",
        "/%252F%252Fevil.example",
    ] {
        // Sent raw, so no client library tidies the target first.
        let start = send(
            http,
            "GET",
            &authority,
            target,
            &[("accept", "text/html")],
            bytes::Bytes::new(),
        )
        .await;
        if start.status == 400 {
            continue; // refused before any sign-in: nothing to redirect to
        }
        assert_eq!(start.status, 302, "{target}: {}", start.text());
        let login = cookie_named(&set_cookies(&start), "KUBE_IAP_LOGIN_").to_string();
        let (name, value) = login.split(';').next().unwrap().split_once('=').unwrap();
        browser.set_cookie(&world.app, name, value);
        let callback = browser
            .provider_redirects_to_callback(start.header("location").unwrap())
            .await;
        let done = browser.get(&callback).await;
        assert_eq!(done.header("location"), Some("/"), "{target}");
        signed_in_from.push(target);
    }
    assert!(
        signed_in_from.len() >= 4,
        "most forms reach the sign-in, so the landing check ran: {signed_in_from:?}"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn session_refresh_signs_in_again_and_ends_on_a_page_that_closes_itself() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &world.app, "/", "alice@example.com").await;
    let refresh = browser
        .get(&format!("{}/_iap/session_refresh", world.app))
        .await;
    assert_eq!(refresh.status, 302);
    let callback = browser
        .provider_redirects_to_callback(refresh.header("location").unwrap())
        .await;
    let done = browser.get(&callback).await;
    assert_eq!(
        done.header("location"),
        Some("/_iap/session_refresh?done=1")
    );
    let closing = browser
        .get(&resolve(&world.app, done.header("location").unwrap()))
        .await;
    assert_eq!(closing.status, 200);
    assert!(closing.text().contains("postMessage"));
    assert!(
        closing
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'sha256-")
    );
    let without_session = Browser::new()
        .get(&format!("{}/_iap/session_refresh?done=1", world.app))
        .await;
    assert_eq!(without_session.status, 400);
    assert!(without_session.text().contains("Error code 9"));
    world.server.shutdown().await;
}

#[tokio::test]
async fn signing_out_expires_every_proxy_cookie_and_ends_the_provider_session() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &world.app, "/", "alice@example.com").await;
    let out = browser
        .get(&format!("{}/_iap/clear_login_cookie", world.app))
        .await;
    assert_eq!(out.status, 302);
    let logout = out.header("location").unwrap();
    assert!(
        logout.starts_with(&format!("{}/session/end?", idp.issuer)),
        "{logout}"
    );
    assert_eq!(
        query_param(logout, "client_id").as_deref(),
        Some(idp::CLIENT_ID)
    );
    let expired = set_cookies(&out);
    assert!(
        expired
            .iter()
            .any(|c| c.starts_with("KUBE_IAP_AUTH_TOKEN_"))
    );
    assert!(expired.iter().any(|c| c.starts_with("KUBE_IAP_UID=")));
    assert!(expired.iter().all(|c| c.contains("Max-Age=0")));
    assert!(
        !browser
            .cookies(&world.app)
            .keys()
            .any(|name| name.starts_with("KUBE_IAP_")),
        "the browser holds no proxy cookie any more"
    );
    let after = browser
        .request(
            "GET",
            &format!("{}/", world.app),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(after.status, 401);
    // The provider shows its sign-out confirmation for this client.
    assert_eq!(browser.get(logout).await.status, 200);
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_sends_navigations_to_the_provider_and_scripts_get_401() {
    let idp = real_idp().await;
    let world = world(&idp.issuer, idp::CLIENT_SECRET).await;
    let cookie = support::sessions::cookie(SESSION_KEY, "app.test", "alice@example.com", &[], -1);
    let http = world.server.http_addr.unwrap();
    let navigation = get(
        http,
        "app.test",
        "/page",
        &[("accept", "text/html"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(navigation.status, 302);
    assert!(
        navigation
            .header("location")
            .unwrap()
            .starts_with(&idp.issuer)
    );
    let script = get(
        http,
        "app.test",
        "/page",
        &[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(script.status, 401);
    assert_eq!(
        script.header("www-authenticate"),
        Some("Bearer realm=\"kube-iap\"")
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_sign_in_returns_to_https_with_secure_cookies() {
    let forger = forging_idp::start().await;
    let backend = backends::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&forger.issuer, idp::CLIENT_SECRET, &["openid", "email"]),
    );
    write(dir.path(), "keys.yaml", &session_keys());
    write(
        dir.path(),
        "app.yaml",
        &format!(
            "{}---\n{}",
            manifests::service("app", backend.port()),
            manifests::policy("app", "app.test", "app", &["domain:example.com"])
        ),
    );
    let sign_in_redirect = |server: &Running, forwarded_proto: Option<&'static str>| {
        let http = server.http_addr.unwrap();
        async move {
            let mut headers = vec![("accept", "text/html")];
            headers.extend(forwarded_proto.map(|proto| ("x-forwarded-proto", proto)));
            let reply = get(http, "app.test", "/deep?x=1", &headers).await;
            assert_eq!(reply.status, 302, "{}", reply.text());
            let location = reply.header("location").unwrap().to_string();
            let redirect_uri = query_param(&location, "redirect_uri").expect("a redirect_uri");
            let secure = set_cookies(&reply).iter().all(|c| c.contains("; Secure"));
            (redirect_uri, secure)
        }
    };

    // The load balancer on 127.0.0.1 terminated TLS and is trusted to say so.
    let behind_proxy = support::start_server_with(
        dir.path(),
        kube_iap::proxy::ProxyConfig {
            access_log: false,
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            ..kube_iap::proxy::ProxyConfig::default()
        },
    )
    .await;
    assert_eq!(
        sign_in_redirect(&behind_proxy, Some("https")).await,
        ("https://app.test/_iap/callback".to_string(), true)
    );
    assert_eq!(
        sign_in_redirect(&behind_proxy, None).await,
        ("http://app.test/_iap/callback".to_string(), false)
    );
    behind_proxy.shutdown().await;

    // Without trust, a client saying https changes nothing.
    let direct = start_server(dir.path()).await;
    assert_eq!(
        sign_in_redirect(&direct, Some("https")).await,
        ("http://app.test/_iap/callback".to_string(), false)
    );
    direct.shutdown().await;
}
