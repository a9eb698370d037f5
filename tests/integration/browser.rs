//! The browser flow in a real browser: Debian's Chromium driven by playwright-core
//! (`e2e/browser/signin.mjs`) against kube-iap, the real OpenID provider and a backend.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use kube_iap::auth::cookies::session_cookie_name;
use support::manifests::{self, write};
use support::{backends, idp, start_server};

const SESSION_KEY: [u8; 32] = [9; 32];

#[tokio::test]
async fn a_person_signs_in_uses_the_app_signs_out_and_signs_in_from_two_tabs() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (`apt-get install -y chromium`, as .ci/run does) \
         or point CHROMIUM at a Chromium binary"
    );
    let provider = idp::start(&[]).await;
    let backend = backends::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "client.yaml",
        &idp::oauth_client(&provider.issuer, idp::CLIENT_SECRET, &["openid", "email"]),
    );
    write(
        dir.path(),
        "keys.yaml",
        &manifests::session_keys(&[("k1", SESSION_KEY)]),
    );
    write(
        dir.path(),
        "app.yaml",
        &manifests::service("app", backend.port()),
    );
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.localhost", "app", &["domain:example.com"]),
    );
    let server = start_server(dir.path()).await;
    let app = format!("http://app.localhost:{}", server.http_addr.unwrap().port());

    let expired_cookie =
        support::sessions::cookie(SESSION_KEY, "app.localhost", "alice@example.com", &[], -60);
    let (_, expired) = expired_cookie
        .split_once('=')
        .expect("a cookie is NAME=VALUE");

    let script = format!("{}/e2e/browser/signin.mjs", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("APP_URL", &app)
        .env("ISSUER", &provider.issuer)
        .env("CHROMIUM", &chromium)
        .env(
            "EXPIRED_COOKIE",
            format!("{}={expired}", session_cookie_name("app.localhost")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run finishes within two minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all steps passed"),
        "browser run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    server.shutdown().await;
}
