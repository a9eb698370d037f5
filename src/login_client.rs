//! `kube-iap login`: signs a person in for the command-line tools (the tunnel client) with the
//! authorization code flow, PKCE and a loopback redirect (RFC 8252), and caches the ID token in
//! the user's config directory, readable by the user only.

use std::path::{Path, PathBuf};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::idp_http::IdpHttp;
use crate::auth::providers::{describe, describe_token_error};

/// What `kube-iap login` keeps between runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct CachedToken {
    pub issuer: String,
    pub client_id: String,
    pub id_token: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// For a new ID token without signing in again, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Needed again to refresh with a confidential client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

pub struct LoginOptions {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub cache: PathBuf,
    /// Try to open the sign-in page in the desktop's browser (`xdg-open` / `open`).
    pub open_browser: bool,
    /// The loopback port the provider redirects to; 0 picks a free one. A fixed port is for
    /// providers that match loopback redirect URIs port and all.
    pub port: u16,
}

/// `$XDG_CONFIG_HOME/kube-iap/token.json`, else `~/.config/kube-iap/token.json`.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("kube-iap").join("token.json")
}

/// The cached ID token if it is valid for at least another minute; otherwise a fresh one from
/// the refresh token (and the cache updated), or why the user must sign in again.
pub async fn cached_token(cache: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(cache).map_err(|_| {
        format!(
            "no cached sign-in at {}: run `kube-iap login`",
            cache.display()
        )
    })?;
    let cached: CachedToken = serde_json::from_str(&text)
        // Only where it broke: serde's message may quote a value, and the values are tokens.
        .map_err(|error| {
            format!(
                "{} is not a kube-iap token cache (line {}, column {})",
                cache.display(),
                error.line(),
                error.column()
            )
        })?;
    if cached.expires_at > crate::auth::session::unix_now() + 60 {
        return Ok(cached.id_token);
    }
    let Some(refresh_token) = cached.refresh_token.clone() else {
        return Err("the cached sign-in has expired: run `kube-iap login` again".into());
    };
    let refreshed = refresh(cached, refresh_token).await.map_err(|error| {
        format!("the sign-in could not be refreshed ({error}): run `kube-iap login` again")
    })?;
    let bytes = serde_json::to_vec_pretty(&refreshed).map_err(|error| error.to_string())?;
    write_private(cache, &bytes).map_err(|error| format!("{}: {error}", cache.display()))?;
    Ok(refreshed.id_token)
}

fn http_client() -> IdpHttp {
    IdpHttp::new(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(15),
    )
}

async fn refresh(cached: CachedToken, refresh_token: String) -> anyhow::Result<CachedToken> {
    let http = http_client();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(cached.issuer.clone())?, &http)
            .await
            .map_err(|error| anyhow::anyhow!("discovery failed: {}", describe(&error)))?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(cached.client_id.clone()),
        cached.client_secret.clone().map(ClientSecret::new),
    );
    let tokens = client
        .exchange_refresh_token(&openidconnect::RefreshToken::new(refresh_token.clone()))?
        .request_async(&http)
        .await
        .map_err(|error| anyhow::anyhow!("{}", describe_token_error(&error)))?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| anyhow::anyhow!("the provider returned no ID token on refresh"))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .map_err(|error| {
            anyhow::anyhow!("the refreshed ID token is invalid: {}", describe(&error))
        })?;
    Ok(CachedToken {
        id_token: id_token.to_string(),
        expires_at: u64::try_from(claims.expiration().timestamp()).unwrap_or(0),
        refresh_token: tokens
            .refresh_token()
            .map(|token| token.secret().clone())
            .or(Some(refresh_token)),
        ..cached
    })
}

pub async fn login(options: LoginOptions) -> anyhow::Result<CachedToken> {
    let http = http_client();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(options.issuer.clone())?, &http)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "discovery at {} failed: {}",
                    options.issuer,
                    describe(&error)
                )
            })?;
    // A refresh token lets the tools renew the ID token without another sign-in; providers give
    // one for offline_access, which OpenID Connect ties to an explicit consent prompt.
    let offline = metadata.scopes_supported().is_some_and(|scopes| {
        scopes
            .iter()
            .any(|scope| scope.as_str() == "offline_access")
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on 127.0.0.1:{}: {error}", options.port))?;
    let redirect = format!(
        "http://127.0.0.1:{}/_iap/callback",
        listener.local_addr()?.port()
    );
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(options.client_id.clone()),
        options.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(redirect)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut authorize = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in options.scopes.iter().filter(|scope| *scope != "openid") {
        authorize = authorize.add_scope(Scope::new(scope.clone()));
    }
    if offline {
        authorize = authorize
            .add_scope(Scope::new("offline_access".into()))
            .add_prompt(openidconnect::core::CoreAuthPrompt::Consent);
    }
    let (url, state, nonce) = authorize.url();
    eprintln!("Sign in at:\n\n  {url}\n");
    if options.open_browser {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        let _ = std::process::Command::new(opener)
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let code = receive_code(&listener, state.secret()).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))?
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "the provider refused the code: {}",
                describe_token_error(&error)
            )
        })?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| anyhow::anyhow!("the provider returned no ID token"))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .map_err(|error| anyhow::anyhow!("the ID token is invalid: {}", describe(&error)))?;
    let cached = CachedToken {
        issuer: options.issuer,
        client_id: options.client_id,
        id_token: id_token.to_string(),
        expires_at: u64::try_from(claims.expiration().timestamp()).unwrap_or(0),
        refresh_token: tokens.refresh_token().map(|token| token.secret().clone()),
        client_secret: options.client_secret,
    };
    write_private(&options.cache, &serde_json::to_vec_pretty(&cached)?)?;
    Ok(cached)
}

/// Waits for the provider to send the browser to the loopback redirect; answers the browser and
/// returns the authorization code.
async fn receive_code(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0u8; 16 * 1024];
        let read = stream.read(&mut buffer).await?;
        let request = String::from_utf8_lossy(&buffer[..read]).into_owned();
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let Some(query) = target.strip_prefix("/_iap/callback?") else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let callback = crate::auth::login::Callback::parse(query);
        let (status, page, outcome) = match (&callback.error, &callback.state, &callback.code) {
            (Some(error), _, _) => (
                "400 Bad Request",
                "Sign-in failed; see the terminal.",
                Err(anyhow::anyhow!("the provider refused: {error}")),
            ),
            (None, Some(got), Some(code)) if got == state => (
                "200 OK",
                "Signed in. You can close this tab.",
                Ok(code.clone()),
            ),
            _ => (
                "400 Bad Request",
                "Sign-in failed; see the terminal.",
                Err(anyhow::anyhow!(
                    "the callback's state does not match this login"
                )),
            ),
        };
        let body = format!("<!doctype html><title>kube-iap</title><p>{page}</p>");
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        return outcome;
    }
}

/// Writes `bytes` to `path` readable and writable by the user only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let mut file = options.open(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)
}
