//! The real OpenID provider for tests: `idp/server.mjs` (npm `oidc-provider`) on 127.0.0.1 with a
//! port the kernel picks, stopped when the handle drops.

use std::process::Stdio;

use tokio::process::{Child, Command};

/// The client the provider registers; tests write the same values into their OAuthClient.
pub const CLIENT_ID: &str = "kube-iap-test";
pub const CLIENT_SECRET: &str = "test-client-secret";

pub struct Idp {
    pub issuer: String,
    child: Child,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts the provider; `extra` adds options such as `--groups alice@example.com=engineering`.
pub async fn start(extra: &[&str]) -> Idp {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(root)
            .join("node_modules/oidc-provider")
            .is_dir(),
        "the test identity provider is not installed: run `npm ci` (scripts/test.sh does)"
    );
    let mut command = Command::new("node");
    command
        .arg(format!("{root}/idp/server.mjs"))
        .args(["--port", "0", "--client-id", CLIENT_ID])
        .args(["--client-secret", CLIENT_SECRET])
        .args([
            "--redirect-uri-pattern",
            r"^https?://[a-z0-9.-]+:[0-9]+/_iap/callback$",
        ])
        .args(extra)
        .stderr(if std::env::var_os("KUBE_IAP_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let (child, announced) = super::node::start(command, "the identity provider").await;
    let issuer = announced["issuer"].as_str().expect("issuer").to_string();
    Idp { issuer, child }
}

/// An OAuthClient `idp` for `issuer` with the test client's credentials (or `secret`).
pub fn oauth_client(issuer: &str, secret: &str, scopes: &[&str]) -> String {
    format!(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {{name: idp, namespace: default}}
spec:
  issuer: {issuer}
  clientId: {CLIENT_ID}
  clientSecretRef: {{name: idp-secret, key: client-secret}}
  scopes: [{scopes}]
---
apiVersion: v1
kind: Secret
metadata: {{name: idp-secret, namespace: default}}
stringData: {{client-secret: {secret}}}
"#,
        scopes = scopes.join(", ")
    )
}

/// An ID token the provider really issues to `login`, from a code flow the test runs itself
/// (the proxy is not involved): the provider's login form, then the token endpoint.
pub async fn id_token(idp: &Idp, login: &str) -> String {
    let redirect_uri = "http://token-client.test:1/_iap/callback";
    let mut browser = super::browser::Browser::new();
    let verifier = "a-test-pkce-verifier-that-is-long-enough-for-rfc-7636";
    let challenge = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()),
    );
    let authorize = format!(
        "{}/auth?client_id={CLIENT_ID}&response_type=code&scope=openid+email+groups&nonce=n&state=s&code_challenge={challenge}&code_challenge_method=S256&redirect_uri={}",
        idp.issuer,
        url::form_urlencoded::byte_serialize(redirect_uri.as_bytes()).collect::<String>()
    );
    let callback = browser.sign_in_at_provider(&authorize, login).await;
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .expect("the provider sent a code");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    );
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier)
        .finish();
    let reply = browser
        .request(
            "POST",
            &format!("{}/token", idp.issuer),
            &[("authorization", &format!("Basic {basic}"))],
            &form,
        )
        .await;
    assert_eq!(reply.status, 200, "token endpoint: {}", reply.text());
    reply.json()["id_token"]
        .as_str()
        .expect("an id_token")
        .to_string()
}
