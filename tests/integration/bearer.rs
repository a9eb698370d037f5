//! Programmatic access: bearer ID tokens (really issued by `oidc-provider`, or forged by hand),
//! workload tokens from a trusted issuer, and the signed assertion backends receive, checked with
//! an ordinary JWT library against the published keys.

use crate::support;

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kube_iap::serve::Running;
use support::forging_idp::{self, Signing};
use support::manifests::write;
use support::{Reply, backends, get, idp, send};

const ASSERTION: &str = "x-kube-iap-jwt-assertion";

struct World {
    _dir: tempfile::TempDir,
    server: Running,
}

impl World {
    /// `GET host/` with `token` as the bearer credential.
    async fn with_bearer(&self, host: &str, token: &str) -> Reply {
        self.send("GET", host, "/", &[("authorization", &bearer(token))])
            .await
    }

    async fn send(&self, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(
            self.server.http_addr.unwrap(),
            method,
            host,
            path,
            headers,
            Bytes::from_static(b"payload"),
        )
        .await
    }
}

/// `app.test` admits example.com users and the service account `team/builder`; `pass.test`
/// passes `Authorization` on, emits Google's headers and signs groups, for the same users.
async fn world(issuer: &str, trusted: Option<&str>) -> World {
    world_with(issuer, trusted, quiet()).await
}

fn quiet() -> kube_iap::proxy::ProxyConfig {
    kube_iap::proxy::ProxyConfig {
        access_log: false,
        ..kube_iap::proxy::ProxyConfig::default()
    }
}

async fn world_with(
    issuer: &str,
    trusted: Option<&str>,
    proxy: kube_iap::proxy::ProxyConfig,
) -> World {
    let backend = backends::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = trusted.map_or(String::new(), |jwks_issuer| {
        format!(
            "  trustedIssuers:\n    - issuer: {jwks_issuer}\n      jwksUri: {jwks_issuer}/jwks\n      audiences: [kube-iap]\n"
        )
    });
    let client = idp::oauth_client(issuer, idp::CLIENT_SECRET, &["openid", "email", "groups"])
        .replacen(
            "  scopes:",
            &format!("  audiences: [extra-audience]\n{trusted}  scopes:"),
            1,
        );
    write(dir.path(), "client.yaml", &client);
    write(dir.path(), "keys.yaml", &session_keys());
    write(
        dir.path(),
        "app.yaml",
        &support::manifests::service("app", backend.port()),
    );
    let members = r#"["domain:example.com", "serviceAccount:team/builder"]"#;
    write(
        dir.path(),
        "policies.yaml",
        &format!(
            r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: app, namespace: default}}
spec:
  oauthClientRef: {{name: idp}}
  hosts: [app.test]
  backend: {{service: app, port: 80}}
  access: [{{members: {members}}}]
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: pass, namespace: default}}
spec:
  oauthClientRef: {{name: idp}}
  hosts: [pass.test]
  backend: {{service: app, port: 80}}
  access: [{{members: {members}}}, {{members: ["group:engineering"]}}]
  passAuthorizationHeader: true
  googleCompatibleHeaders: true
  signedHeaders: {{audience: pass-backend, includeGroups: true}}
"#
        ),
    );
    let server = support::start_server_with(dir.path(), proxy).await;
    World { _dir: dir, server }
}

const SESSION_KEY: [u8; 32] = [7; 32];

fn session_keys() -> String {
    support::manifests::session_keys(&[("k1", SESSION_KEY)])
}

/// A Secret of assertion signing keys: `(entry name, PEM)`.
fn signing_keys(entries: &[(&str, &str)]) -> String {
    let data: String = entries
        .iter()
        .map(|(name, pem)| {
            format!(
                "  {name}: |\n{}",
                pem.lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>()
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: kube-iap-signing-keys, namespace: default}}\nstringData:\n{data}"
    )
}

fn session_cookie(host: &str) -> String {
    support::sessions::cookie(SESSION_KEY, host, "alice@example.com", &[], 600)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Verifies an assertion as a backend would: the published keys, ES256, audience and issuer.
async fn verify_assertion(
    world: &World,
    token: &str,
    audience: &str,
) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let jwks: JwkSet = get(
        world.server.http_addr.unwrap(),
        "app.test",
        "/_iap/jwks.json",
        &[],
    )
    .await
    .json()
    .pipe(serde_json::from_value)
    .unwrap();
    let kid = jsonwebtoken::decode_header(token)?.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the assertion's key is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["urn:kube-iap"]);
    validation.leeway = 0;
    validation.validate_nbf = true;
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)
        .map(|data| data.claims)
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[tokio::test]
async fn a_real_id_token_posts_programmatically_and_the_backend_gets_a_verifiable_assertion() {
    let provider = idp::start(&["--groups", "alice@example.com=engineering"]).await;
    let world = world(&provider.issuer, None).await;
    let token = idp::id_token(&provider, "alice@example.com").await;

    let posted = world
        .send(
            "POST",
            "app.test",
            "/api/items",
            &support::with_spoofed_identity(&[("authorization", &bearer(&token))]),
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let seen = posted.json()["headers"].clone();
    support::assert_no_spoofed_identity(&seen);
    assert_eq!(
        seen["x-kube-iap-authenticated-user-email"],
        "alice@example.com"
    );
    assert!(
        seen.get("authorization").is_none(),
        "the credential is not forwarded: {seen}"
    );
    assert!(
        seen.get("x-goog-authenticated-user-email").is_none()
            && seen.get("x_kube_iap_authenticated_user_email").is_none(),
        "{seen}"
    );
    let assertion = seen[ASSERTION].as_str().unwrap();
    let claims = verify_assertion(&world, assertion, "/namespaces/default/iappolicies/app")
        .await
        .expect("the assertion verifies with an ordinary JWT library");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    assert!(
        claims.get("groups").is_none(),
        "groups only when the policy asks"
    );

    // Proxy-Authorization is the proxy's: it authenticates and never reaches the backend.
    let proxied = world
        .send(
            "GET",
            "app.test",
            "/",
            &[
                ("proxy-authorization", &bearer(&token)),
                ("authorization", "Basic YXBwOnNlY3JldA=="),
            ],
        )
        .await;
    assert_eq!(proxied.status, 200);
    let seen = proxied.json()["headers"].clone();
    assert!(seen.get("proxy-authorization").is_none());
    assert_eq!(
        seen["authorization"], "Basic YXBwOnNlY3JldA==",
        "the app's own credential passes"
    );

    // A policy can pass the token on, ask for Google's headers and sign groups.
    let passed = world
        .send(
            "GET",
            "pass.test",
            "/",
            &[("authorization", &bearer(&token))],
        )
        .await;
    let seen = passed.json()["headers"].clone();
    assert_eq!(seen["authorization"], bearer(&token));
    assert_eq!(
        seen["x-goog-authenticated-user-email"],
        "kube-iap:alice@example.com"
    );
    let claims = verify_assertion(&world, seen[ASSERTION].as_str().unwrap(), "pass-backend")
        .await
        .unwrap();
    assert_eq!(claims["groups"], serde_json::json!(["engineering"]));

    // Someone the provider really signed in but the policy does not name: the 403 says who.
    let outsider = idp::id_token(&provider, "bob@elsewhere.org").await;
    let denied = world
        .send(
            "GET",
            "app.test",
            "/",
            &[
                ("authorization", &bearer(&outsider)),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let error = &denied.json()["error"];
    assert_eq!(error["identity"], "bob@elsewhere.org");
    assert_eq!(error["policy"], "default/app");
    assert!(
        error["reason"].as_str().unwrap().contains("No access rule"),
        "{error}"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_invalid_bearer_token_is_refused_with_code_13_even_next_to_a_valid_cookie() {
    let provider = idp::start(&[]).await;
    let world = world(&provider.issuer, None).await;
    let cookie = session_cookie("app.test");
    let with_cookie = world
        .send("POST", "app.test", "/", &[("cookie", &cookie)])
        .await;
    assert_eq!(with_cookie.status, 200, "the cookie alone is valid");
    let refused = world
        .send(
            "POST",
            "app.test",
            "/",
            &[
                ("authorization", "Bearer not-a-jwt"),
                ("accept", "application/json"),
                ("cookie", &cookie),
            ],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["errorCode"], 13);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"kube-iap\", error=\"invalid_token\"")
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn forged_expired_misaddressed_and_garbage_tokens_are_refused() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let status = |token: String| {
        let world = &world;
        async move { world.with_bearer("app.test", &token).await.status }
    };
    let valid = forger.claims(idp::CLIENT_ID, "carol");
    assert_eq!(
        status(forger.mint(&valid, Signing::Published)).await,
        200,
        "the control works"
    );
    let extra = forger.claims("extra-audience", "carol");
    assert_eq!(
        status(forger.mint(&extra, Signing::Published)).await,
        200,
        "spec.audiences"
    );
    for signing in [Signing::EdDsa, Signing::Ps256] {
        assert_eq!(
            status(forger.mint(&valid, signing)).await,
            200,
            "{signing:?} as providers use it"
        );
    }

    let now = forging_idp::now();
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = valid.clone();
        claims[field] = value;
        claims
    };
    // An email the provider has not verified never matches `domain:` (or `user:`) members.
    let mut unverified = valid.clone();
    unverified["email_verified"] = false.into();
    let mut unstated = valid.clone();
    unstated.as_object_mut().unwrap().remove("email_verified");
    for (what, claims) in [("unverified", unverified), ("unstated", unstated)] {
        assert_eq!(
            status(forger.mint(&claims, Signing::Published)).await,
            403,
            "{what} email"
        );
    }
    // Clocks drift: up to 60 s either way is forgiven.
    for (what, claims) in [
        ("expired 30 s ago", with("exp", (now - 30).into())),
        ("valid from 30 s on", with("nbf", (now + 30).into())),
        ("issued 30 s from now", with("iat", (now + 30).into())),
    ] {
        assert_eq!(
            status(forger.mint(&claims, Signing::Published)).await,
            200,
            "{what}"
        );
    }
    let cases: Vec<(&str, String)> = vec![
        ("alg none", forger.mint(&valid, Signing::None)),
        (
            "HS256 keyed with the public key",
            forger.mint(&valid, Signing::HmacWithPublicKey),
        ),
        ("embedded jwk", forger.mint(&valid, Signing::EmbeddedJwk)),
        (
            "another key under the published kid",
            forger.mint(&valid, Signing::OtherKey),
        ),
        (
            "wrong aud",
            forger.mint(&with("aud", "someone-else".into()), Signing::Published),
        ),
        (
            "another OAuthClient's token",
            forger.mint(&with("aud", "other-client".into()), Signing::Published),
        ),
        (
            "wrong iss",
            forger.mint(
                &with("iss", "https://evil.example".into()),
                Signing::Published,
            ),
        ),
        (
            "expired beyond the skew",
            forger.mint(&with("exp", (now - 120).into()), Signing::Published),
        ),
        (
            "nbf in the future",
            forger.mint(&with("nbf", (now + 600).into()), Signing::Published),
        ),
        (
            "issued in the future",
            forger.mint(&with("iat", (now + 600).into()), Signing::Published),
        ),
        ("garbage", "garbage".to_string()),
        ("truncated", {
            let token = forger.mint(&valid, Signing::Published);
            token[..token.len() - 20].to_string()
        }),
    ];
    for (what, token) in cases {
        assert_eq!(status(token).await, 401, "{what}");
    }

    // Unknown key ids: one key refresh, then the refresh interval protects the provider.
    let before = forger.jwks_fetches();
    for _ in 0..3 {
        let refused = world
            .send(
                "GET",
                "app.test",
                "/",
                &[
                    (
                        "authorization",
                        &bearer(&forger.mint(&valid, Signing::UnknownKid)),
                    ),
                    ("accept", "application/json"),
                ],
            )
            .await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.json()["error"]["errorCode"], 13);
    }
    assert!(
        forger.jwks_fetches() - before <= 1,
        "{} key set fetches for three unknown kids",
        forger.jwks_fetches() - before
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_workload_token_from_a_trusted_issuer_is_its_service_account() {
    let forger = forging_idp::start().await;
    let cluster = forging_idp::start().await;
    let world = world(&forger.issuer, Some(&cluster.issuer)).await;
    let projected = |namespace: &str, name: &str, audience: &str| {
        let mut claims = cluster.claims(
            audience,
            &format!("system:serviceaccount:{namespace}:{name}"),
        );
        claims.as_object_mut().unwrap().remove("email");
        claims["kubernetes.io"] = serde_json::json!({
            "namespace": namespace, "serviceaccount": {"name": name},
        });
        cluster.mint(&claims, Signing::Published)
    };
    let call = |token: String| {
        let world = &world;
        async move { world.with_bearer("app.test", &token).await }
    };
    let admitted = call(projected("team", "builder", "kube-iap")).await;
    assert_eq!(admitted.status, 200, "{}", admitted.text());
    let assertion = admitted.json()["headers"][ASSERTION]
        .as_str()
        .unwrap()
        .to_string();
    let claims = verify_assertion(&world, &assertion, "/namespaces/default/iappolicies/app")
        .await
        .unwrap();
    assert_eq!(claims["service_account"], "team/builder");
    assert_eq!(
        call(projected("team", "intruder", "kube-iap")).await.status,
        403
    );
    assert_eq!(
        call(projected("team", "builder", "another-audience"))
            .await
            .status,
        401
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn secure_token_test_breaks_each_assertion_in_exactly_its_way() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let token = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let audience = "/namespaces/default/iappolicies/app";
    for (kind, expected) in [
        ("NOT_SET", None),
        ("FUTURE_ISSUE", Some("ImmatureSignature")),
        ("PAST_EXPIRATION", Some("ExpiredSignature")),
        ("ISSUER", Some("InvalidIssuer")),
        ("AUDIENCE", Some("InvalidAudience")),
        ("SIGNATURE", Some("InvalidSignature")),
    ] {
        let reply = world
            .send(
                "GET",
                "app.test",
                &format!("/_iap/secure_token_test?type={kind}"),
                &[("authorization", &bearer(&token))],
            )
            .await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text());
        assert_eq!(reply.json()["path"], "/_iap/secure_token_test");
        let assertion = reply.json()["headers"][ASSERTION]
            .as_str()
            .unwrap()
            .to_string();
        let outcome = verify_assertion(&world, &assertion, audience)
            .await
            .map_err(|error| format!("{:?}", error.kind()));
        match expected {
            None => assert!(outcome.is_ok(), "{kind}: {outcome:?}"),
            Some(reason) => assert_eq!(outcome.unwrap_err(), reason, "{kind}"),
        }
    }
    let unknown = world
        .send(
            "GET",
            "app.test",
            "/_iap/secure_token_test?type=BOGUS",
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(unknown.status, 400);
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_retired_signing_key_stays_published_until_its_assertions_expire() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let pem = |_: ()| {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    };
    let (first, second) = (pem(()), pem(()));
    write(
        world._dir.path(),
        "signing.yaml",
        &signing_keys(&[("2026-01", &first)]),
    );
    let token = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let assertion = || async {
        let reply = world
            .send(
                "GET",
                "app.test",
                "/",
                &[("authorization", &bearer(&token))],
            )
            .await;
        reply.json()["headers"][ASSERTION]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let table = world.server.published.table.clone();
    support::eventually("the Secret's key is loaded", || {
        let table = table.clone();
        async move { table.load().signing_keys.is_some() }
    })
    .await;
    let old = assertion().await;
    let configured = table.load().signing_keys.clone().unwrap();
    assert_eq!(
        kid_of(&old),
        configured.newest().kid,
        "signed with the Secret's key"
    );

    // The Secret now holds only a new key: new assertions use it, the old one still verifies.
    write(
        world._dir.path(),
        "signing.yaml",
        &signing_keys(&[("2026-02", &second)]),
    );
    let old_kid = kid_of(&old);
    support::eventually("the new key is loaded", || {
        let (table, old_kid) = (table.clone(), old_kid.clone());
        async move { table.load().signing_keys.as_ref().unwrap().newest().kid != old_kid }
    })
    .await;
    let new = assertion().await;
    assert_ne!(kid_of(&new), old_kid, "the new key signs");
    for token in [&old, &new] {
        verify_assertion(&world, token, "/namespaces/default/iappolicies/app")
            .await
            .expect("both keys are published");
    }
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_once_per_interval_and_verified_tokens_stay_cached() {
    let forger = forging_idp::start().await;
    let interval = std::time::Duration::from_millis(500);
    let world = world_with(
        &forger.issuer,
        None,
        kube_iap::proxy::ProxyConfig {
            key_refresh_interval: interval,
            // Verified tokens are cached per worker thread: one worker sees every request.
            workers: 1,
            ..quiet()
        },
    )
    .await;
    let valid = forger.claims(idp::CLIENT_ID, "carol");
    let status = |token: String| {
        let world = &world;
        async move { world.with_bearer("app.test", &token).await.status }
    };
    assert_eq!(status(forger.mint(&valid, Signing::Published)).await, 200);
    let fetched = forger.jwks_fetches();

    // The provider starts signing with a new key. Until the interval since the last fetch has
    // passed the cached keys are final (401); then one fetch finds the key.
    forger.rotate();
    let rotated = forger.mint(&valid, Signing::Rotated);
    let started = std::time::Instant::now();
    let mut refused = 0;
    while status(rotated.clone()).await != 200 {
        refused += 1;
        assert!(
            started.elapsed() < interval * 10,
            "the rotated key was never fetched"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        forger.jwks_fetches(),
        fetched + 1,
        "{refused} refused requests, one key refresh"
    );
    assert_eq!(status(rotated.clone()).await, 200);
    assert_eq!(
        forger.jwks_fetches(),
        fetched + 1,
        "known keys need no fetch"
    );

    // A verified token is cached until it expires: with its key gone from the provider and
    // from kube-iap's key set, it still passes, while a new token under that key does not.
    forger.retire_rotated();
    let unknown = forger.mint(&valid, Signing::UnknownKid);
    let started = std::time::Instant::now();
    while forger.jwks_fetches() == fetched + 1 {
        assert_eq!(status(unknown.clone()).await, 401);
        assert!(started.elapsed() < interval * 10, "no key refresh");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let fresh = forger.mint(&forger.claims(idp::CLIENT_ID, "erin"), Signing::Rotated);
    assert_eq!(
        status(fresh).await,
        401,
        "the retired key verifies nothing new"
    );
    assert_eq!(status(rotated).await, 200, "the cached token needs no key");
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_valid_token_of_another_oauth_client_opens_only_that_clients_policies() {
    let (ours, theirs) = (forging_idp::start().await, forging_idp::start().await);
    let world = world(&ours.issuer, None).await;
    // A second provider and client, protecting `other.test`.
    let other_client = idp::oauth_client(&theirs.issuer, "other-secret", &["openid", "email"])
        .replace("name: idp,", "name: other-idp,")
        .replace("name: idp-secret", "name: other-idp-secret")
        .replace(
            &format!("clientId: {}", idp::CLIENT_ID),
            "clientId: other-client",
        );
    write(world._dir.path(), "other-client.yaml", &other_client);
    write(
        world._dir.path(),
        "other-policy.yaml",
        &support::manifests::policy("other", "other.test", "app", &["domain:example.com"]).replace(
            "oauthClientRef: {name: idp}",
            "oauthClientRef: {name: other-idp}",
        ),
    );
    let table = world.server.published.table.clone();
    support::eventually("other.test is served", || {
        let table = table.clone();
        async move { table.load().route("other.test", "/").is_some() }
    })
    .await;
    let status = |host: &'static str, token: String| {
        let world = &world;
        async move {
            world
                .send("GET", host, "/", &[("authorization", &bearer(&token))])
                .await
                .status
        }
    };
    let theirs_token = theirs.mint(&theirs.claims("other-client", "dave"), Signing::Published);
    let ours_token = ours.mint(&ours.claims(idp::CLIENT_ID, "dave"), Signing::Published);
    assert_eq!(status("other.test", theirs_token.clone()).await, 200);
    assert_eq!(status("app.test", ours_token.clone()).await, 200);
    // Each token, valid where it belongs and now cached, opens nothing else.
    assert_eq!(status("app.test", theirs_token).await, 401);
    assert_eq!(status("other.test", ours_token).await, 401);
    world.server.shutdown().await;
}

#[tokio::test]
async fn verify_assertion_prints_the_claims_or_exactly_why_not_against_the_admin_jwks() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let token = forger.mint(&forger.claims(idp::CLIENT_ID, "carol"), Signing::Published);
    let assertion_for = |path: &'static str| {
        let (world, token) = (&world, token.clone());
        async move {
            let reply = world
                .send(
                    "GET",
                    "app.test",
                    path,
                    &[("authorization", &bearer(&token))],
                )
                .await;
            reply.json()["headers"][ASSERTION]
                .as_str()
                .expect("an assertion")
                .to_string()
        }
    };
    let assertion = assertion_for("/").await;

    // The admin port publishes the same keys as every host.
    let admin_jwks = get(world.server.admin_addr, "admin", "/jwks.json", &[]).await;
    assert_eq!(admin_jwks.status, 200);
    let host_jwks = get(
        world.server.http_addr.unwrap(),
        "app.test",
        "/_iap/jwks.json",
        &[],
    )
    .await;
    assert_eq!(admin_jwks.json()["keys"], host_jwks.json()["keys"]);

    let jwks_url = format!("http://{}/jwks.json", world.server.admin_addr);
    let verify = |token: String, audience: &'static str| {
        let jwks_url = jwks_url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
                .args([
                    "verify-assertion",
                    "--jwks",
                    &jwks_url,
                    "--audience",
                    audience,
                ])
                .arg(token)
                .output()
                .await
                .expect("kube-iap runs")
        }
    };
    let audience = "/namespaces/default/iappolicies/app";
    let valid = verify(assertion.clone(), audience).await;
    assert!(valid.status.success(), "{valid:?}");
    let claims: serde_json::Value = serde_json::from_slice(&valid.stdout).expect("JSON claims");
    assert_eq!(claims["email"], "carol@example.com");
    assert_eq!(claims["aud"], audience);

    let said = |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).to_string();
    let wrong_audience = verify(assertion, "/namespaces/default/iappolicies/other").await;
    assert_eq!(wrong_audience.status.code(), Some(1));
    assert!(
        said(&wrong_audience).contains("audience"),
        "{}",
        said(&wrong_audience)
    );
    let forged = verify(
        assertion_for("/_iap/secure_token_test?type=SIGNATURE").await,
        audience,
    )
    .await;
    assert_eq!(forged.status.code(), Some(1));
    assert!(
        said(&forged).to_lowercase().contains("signature"),
        "{}",
        said(&forged)
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_trusted_issuer_without_a_jwks_uri_is_found_through_its_discovery_document() {
    let forger = forging_idp::start().await;
    let ci = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let client = idp::oauth_client(&forger.issuer, idp::CLIENT_SECRET, &["openid", "email"])
        .replacen(
            "  scopes:",
            &format!(
                "  trustedIssuers:\n    - issuer: {}\n      audiences: [kube-iap]\n  scopes:",
                ci.issuer
            ),
            1,
        );
    write(world._dir.path(), "client.yaml", &client);
    let mut claims = ci.claims("kube-iap", "system:serviceaccount:team:builder");
    claims.as_object_mut().unwrap().remove("email");
    claims["kubernetes.io"] = serde_json::json!({
        "namespace": "team", "serviceaccount": {"name": "builder"},
    });
    let token = ci.mint(&claims, Signing::Published);
    let started = std::time::Instant::now();
    loop {
        let reply = world
            .send(
                "GET",
                "app.test",
                "/",
                &[("authorization", &bearer(&token))],
            )
            .await;
        if reply.status == 200 {
            break;
        }
        // Until the new OAuthClient is loaded the issuer is unknown (401).
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "never admitted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ci.jwks_fetches() >= 1,
        "the keys came from the discovered jwks_uri"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn assume_email_verified_admits_tokens_without_the_claim_but_never_an_explicit_false() {
    let forger = forging_idp::start().await;
    let world = world(&forger.issuer, None).await;
    let with_verified = |value: Option<bool>| {
        let mut claims = forger.claims(idp::CLIENT_ID, "erin");
        match value {
            Some(verified) => claims["email_verified"] = verified.into(),
            None => drop(claims.as_object_mut().unwrap().remove("email_verified")),
        }
        forger.mint(&claims, Signing::Published)
    };
    let status = |token: String| {
        let world = &world;
        async move { world.with_bearer("app.test", &token).await.status }
    };
    // As Microsoft Entra ID issues them: an email, no email_verified.
    assert_eq!(
        status(with_verified(None)).await,
        403,
        "unverified by default"
    );

    let client = idp::oauth_client(&forger.issuer, idp::CLIENT_SECRET, &["openid", "email"])
        .replacen("  scopes:", "  assumeEmailVerified: true\n  scopes:", 1);
    write(world._dir.path(), "client.yaml", &client);
    let started = std::time::Instant::now();
    while status(with_verified(None)).await != 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "assumeEmailVerified never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status(with_verified(Some(false))).await,
        403,
        "an explicit false stays false"
    );
    assert_eq!(status(with_verified(Some(true))).await, 200);
    world.server.shutdown().await;
}
