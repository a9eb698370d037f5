//! The OpenID Connect authorization code flow: sending a browser to the provider and turning the
//! provider's answer into a session.
//!
//! Each login attempt keeps its `state`, `nonce` and PKCE verifier in a cookie of its own,
//! sealed like a session and named after the state, so several tabs can sign in at once and one
//! attempt's answer can never complete another. The cookie lives ten minutes, is only sent to
//! `/_iap/callback`, and is used once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreErrorResponseType};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::id_token::{self, TokenError};
use super::providers::{DiscoveryFailed, Providers, describe_token_error};
use super::session::{KeyRing, Purpose, Session};
use crate::error_codes::ErrorCode;
use crate::model::{OidcClient, SignIn};

/// The OIDC redirect URI's path on every host.
pub const CALLBACK_PATH: &str = "/_iap/callback";
/// Login attempt cookies: `KUBE_IAP_LOGIN_<state prefix>`.
pub const LOGIN_COOKIE_PREFIX: &str = "KUBE_IAP_LOGIN_";
/// How long a browser has to come back from the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How many characters of the state name its cookie; enough to tell tabs apart.
const STATE_ID_LEN: usize = 12;

/// What a login attempt must remember until the provider sends the browser back.
#[derive(Serialize, Deserialize)]
struct LoginState {
    #[serde(rename = "s")]
    state: String,
    #[serde(rename = "n")]
    nonce: String,
    #[serde(rename = "p")]
    pkce_verifier: String,
    /// Where the user goes afterwards: a validated relative path with its query.
    #[serde(rename = "r")]
    return_to: String,
    /// The exact redirect URI sent to the provider; the token request must repeat it.
    #[serde(rename = "u")]
    redirect_uri: String,
    /// Session length of the route the login started on, in seconds.
    #[serde(rename = "m")]
    session_max_age: u64,
    /// Seconds since the Unix epoch.
    #[serde(rename = "x")]
    expires_at: u64,
}

/// Why a sign-in failed. Each maps to an error code on the page; details go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    ProviderUnavailable(#[from] DiscoveryFailed),
    #[error("the identity provider rejected the OAuth client: {0}")]
    ClientRejected(String),
    #[error("the identity provider answered with an error: {0}")]
    ProviderRefused(String),
    #[error("the callback has no state, or its login cookie is missing, expired or already used")]
    StateUnknown,
    #[error("the callback's state does not match its login cookie")]
    StateMismatch,
    #[error("the authorization code could not be exchanged: {0}")]
    ExchangeFailed(String),
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
    #[error("the session does not fit in a cookie: {0}")]
    SessionTooLarge(String),
}

impl LoginError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LoginError::ProviderUnavailable(_) | LoginError::ClientRejected(_) => {
                ErrorCode::OAuthClientMisconfigured
            }
            LoginError::InvalidIdToken(_) => ErrorCode::InvalidToken,
            LoginError::ProviderRefused(_)
            | LoginError::StateUnknown
            | LoginError::StateMismatch
            | LoginError::ExchangeFailed(_)
            | LoginError::SessionTooLarge(_) => ErrorCode::OAuthFlowFailed,
        }
    }
}

/// Where to send the browser, and the login cookie to set on the way.
pub struct LoginStart {
    pub authorize_url: String,
    pub cookie_name: String,
    pub cookie_value: String,
}

/// A completed sign-in.
pub struct LoginDone {
    pub session: Session,
    pub return_to: String,
}

/// The request facts a login needs, all already validated by the proxy.
pub struct LoginRequest<'a> {
    /// Lower-case host without port: what sessions are bound to.
    pub host: &'a str,
    /// The authority as the browser sent it (host and port), for the redirect URI.
    pub authority: &'a str,
    pub tls: bool,
    /// The session keys: they also seal login cookies.
    pub keys: &'a KeyRing,
}

pub struct Logins {
    providers: Arc<Providers>,
    /// States already redeemed on this replica, with their expiry; a replayed callback fails
    /// here before the provider is asked (which would refuse the used code anyway).
    redeemed: Mutex<HashMap<String, u64>>,
}

impl Logins {
    pub fn new(providers: Arc<Providers>) -> Self {
        Logins {
            providers,
            redeemed: Mutex::default(),
        }
    }

    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// Starts a login: the provider's authorization URL and the login cookie.
    pub async fn start(
        &self,
        sign_in: &SignIn,
        request: &LoginRequest<'_>,
        return_to: &str,
        now: u64,
    ) -> Result<LoginStart, LoginError> {
        let redirect_uri = format!(
            "{}://{}{CALLBACK_PATH}",
            if request.tls { "https" } else { "http" },
            request.authority
        );
        let client = self.client(&sign_in.client, &redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut authorize = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in sign_in.client.scopes.iter().filter(|s| *s != "openid") {
            authorize = authorize.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = authorize.url();
        let login = LoginState {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to: super::redirect::safe_return_path(return_to).to_string(),
            redirect_uri,
            session_max_age: sign_in.session_max_age.as_secs(),
            expires_at: now + LOGIN_TTL.as_secs(),
        };
        let payload = serde_json::to_vec(&login).expect("a login state serializes");
        let cookie_value = request
            .keys
            .seal_bytes(payload, Purpose::Login, request.host)
            .map_err(|error| LoginError::SessionTooLarge(error.to_string()))?;
        Ok(LoginStart {
            authorize_url: url.to_string(),
            cookie_name: login_cookie_name(&login.state),
            cookie_value,
        })
    }

    /// Completes a login from the callback's query and the login cookie the browser sent back.
    /// `keep_group` says which groups policies name, the only ones the session keeps.
    pub async fn finish(
        &self,
        sign_in: &SignIn,
        request: &LoginRequest<'_>,
        callback: &Callback,
        login_cookie: Option<&str>,
        keep_group: &(dyn Fn(&str) -> bool + Sync),
        now: u64,
    ) -> Result<LoginDone, LoginError> {
        if let Some(error) = &callback.error {
            return Err(LoginError::ProviderRefused(error.clone()));
        }
        let state = callback.state.as_deref().ok_or(LoginError::StateUnknown)?;
        let sealed = login_cookie.ok_or(LoginError::StateUnknown)?;
        let plain = request
            .keys
            .open_bytes(sealed, Purpose::Login, request.host)
            .map_err(|_| LoginError::StateUnknown)?;
        let login: LoginState =
            serde_json::from_slice(&plain).map_err(|_| LoginError::StateUnknown)?;
        if login.expires_at <= now {
            return Err(LoginError::StateUnknown);
        }
        if !constant_time_eq(login.state.as_bytes(), state.as_bytes()) {
            return Err(LoginError::StateMismatch);
        }
        self.redeem(&login.state, login.expires_at, now)?;
        let code = callback.code.clone().ok_or_else(|| {
            LoginError::ProviderRefused("the callback carries no authorization code".into())
        })?;

        let client = self.client(&sign_in.client, &login.redirect_uri).await?;
        let http = self.providers.http();
        let exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|error| LoginError::ExchangeFailed(error.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(http)
            .await;
        let tokens = match exchange {
            Ok(tokens) => {
                self.providers.client_accepted(&sign_in.client.name);
                tokens
            }
            Err(RequestTokenError::ServerResponse(response)) if rejects_client(&response) => {
                let detail = format!(
                    "the provider answered the token request with {}",
                    response.error().as_ref()
                );
                self.providers
                    .client_rejected(&sign_in.client.name, detail.clone());
                return Err(LoginError::ClientRejected(detail));
            }
            Err(error) => return Err(LoginError::ExchangeFailed(describe_token_error(&error))),
        };
        let raw_token = tokens
            .id_token()
            .ok_or_else(|| LoginError::InvalidIdToken("the token response has no id_token".into()))?
            .to_string();
        let nonce = Nonce::new(login.nonce.clone());
        let expected = id_token::Expected::for_client(&sign_in.client);
        let verified = id_token::verify(&self.providers, &expected, &raw_token, Some(&nonce))
            .await
            .map_err(|error| match error {
                TokenError::ProviderUnavailable(failed) => LoginError::ProviderUnavailable(failed),
                other => LoginError::InvalidIdToken(other.to_string()),
            })?;
        let identity = verified.identity;
        let session = Session {
            subject: identity.subject,
            email: identity.email,
            email_verified: identity.email_verified,
            issuer: identity.issuer,
            groups: super::session::groups_policies_need(
                identity.groups.iter().map(String::as_str),
                &keep_group,
            ),
            expires_at: now + login.session_max_age,
        };
        Ok(LoginDone {
            session,
            return_to: super::redirect::safe_return_path(&login.return_to).to_string(),
        })
    }

    /// Checks `client`'s credentials at its token endpoint by redeeming a code that cannot be
    /// valid. Providers authenticate the client before they look at the code, so
    /// `invalid_client` means the credentials are wrong (code 11 on the OAuthClient) and any other
    /// refusal, normally `invalid_grant`, means they are fine. `None`: no verdict (the provider
    /// could not be reached; discovery reports that on its own).
    pub async fn probe_client(&self, client: &OidcClient) -> Option<bool> {
        let core = self.client(client, PROBE_REDIRECT_URI).await.ok()?;
        let code = format!("kube-iap-client-probe-{}", super::session::unix_now());
        let result = core
            .exchange_code(AuthorizationCode::new(code))
            .ok()?
            .request_async(self.providers.http())
            .await;
        match result {
            Err(RequestTokenError::ServerResponse(response)) if rejects_client(&response) => {
                self.providers.client_rejected(
                    &client.name,
                    format!(
                        "the provider's token endpoint refuses the client ID and secret ({})",
                        response.error().as_ref()
                    ),
                );
                Some(false)
            }
            Ok(_) | Err(RequestTokenError::ServerResponse(_)) => {
                self.providers.client_accepted(&client.name);
                Some(true)
            }
            Err(_) => None,
        }
    }

    /// The openidconnect client for `client` at its provider, sending `redirect_uri`.
    async fn client(
        &self,
        client: &OidcClient,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        LoginError,
    > {
        let discovered = self.providers.metadata(&client.issuer).await?;
        let document = discovered.document();
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|error| LoginError::ExchangeFailed(format!("redirect URI: {error}")))?;
        // The logout extension is not needed here; map it away to get the core client type.
        let metadata = openidconnect::core::CoreProviderMetadata::new(
            document.issuer().clone(),
            document.authorization_endpoint().clone(),
            document.jwks_uri().clone(),
            document.response_types_supported().clone(),
            document.subject_types_supported().clone(),
            document.id_token_signing_alg_values_supported().clone(),
            openidconnect::EmptyAdditionalProviderMetadata {},
        )
        .set_token_endpoint(document.token_endpoint().cloned())
        .set_userinfo_endpoint(document.userinfo_endpoint().cloned())
        .set_jwks(discovered.keys().clone());
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client.client_id.clone()),
            Some(ClientSecret::new(client.client_secret.expose().to_string())),
        )
        .set_redirect_uri(redirect))
    }

    /// Marks a state as used; a second use fails. Old entries are dropped as they expire.
    fn redeem(&self, state: &str, expires_at: u64, now: u64) -> Result<(), LoginError> {
        let mut redeemed = self.redeemed.lock().expect("never poisoned");
        redeemed.retain(|_, expiry| *expiry > now);
        if redeemed.insert(state.to_string(), expires_at).is_some() {
            return Err(LoginError::StateUnknown);
        }
        Ok(())
    }
}

/// The callback's query parameters.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The provider's `error` (and `error_description`), when it refused.
    pub error: Option<String>,
}

impl Callback {
    pub fn parse(query: &str) -> Self {
        let mut callback = Callback::default();
        let mut description = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "code" => callback.code = Some(value.into_owned()),
                "state" => callback.state = Some(value.into_owned()),
                "error" => callback.error = Some(value.into_owned()),
                "error_description" => description = Some(value.into_owned()),
                _ => {}
            }
        }
        if let (Some(error), Some(description)) = (&mut callback.error, description) {
            error.push_str(": ");
            error.push_str(&description);
        }
        callback
    }
}

/// The login cookie's name for a state. States are URL-safe base64, so the prefix is cookie-safe;
/// anything else gets a name no cookie has.
/// A redirect URI for the credentials probe; the code it accompanies is refused either way.
const PROBE_REDIRECT_URI: &str = "http://127.0.0.1/_iap/callback";

/// Whether a token endpoint's error means it does not accept the client's credentials.
fn rejects_client(response: &openidconnect::StandardErrorResponse<CoreErrorResponseType>) -> bool {
    matches!(
        response.error(),
        CoreErrorResponseType::InvalidClient | CoreErrorResponseType::UnauthorizedClient
    )
}

pub fn login_cookie_name(state: &str) -> String {
    let id: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(STATE_ID_LEN)
        .collect();
    format!("{LOGIN_COOKIE_PREFIX}{id}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::idp_http::IdpHttp;
    use crate::model::ClientSecret;

    const NOW: u64 = 1_800_000_000;

    fn sign_in() -> SignIn {
        SignIn {
            client: Arc::new(OidcClient {
                name: "ns/idp".into(),
                // Nothing listens here: a check that needed the provider would fail differently.
                issuer: "http://127.0.0.1:1".into(),
                client_id: "app".into(),
                client_secret: ClientSecret::new("secret"),
                scopes: vec![],
                groups_claim: "groups".into(),
                audiences: vec![],
                trusted_issuers: vec![],
                assume_email_verified: false,
                verification_scope: [0; 32],
            }),
            session_max_age: Duration::from_secs(3600),
        }
    }

    fn sealed_login(keys: &KeyRing, host: &str, state: &str, expires_at: u64) -> String {
        let login = LoginState {
            state: state.into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/".into(),
            redirect_uri: format!("http://{host}/_iap/callback"),
            session_max_age: 3600,
            expires_at,
        };
        keys.seal_bytes(serde_json::to_vec(&login).unwrap(), Purpose::Login, host)
            .unwrap()
    }

    async fn finish_with(cookie: &str, host: &str, keys: &KeyRing, now: u64) -> LoginError {
        let logins = Logins::new(Providers::new(
            IdpHttp::new(Duration::from_millis(200), Duration::from_millis(500)),
            crate::auth::providers::KEY_REFRESH_INTERVAL,
        ));
        let request = LoginRequest {
            host,
            authority: host,
            tls: false,
            keys,
        };
        let callback = Callback::parse("code=c&state=the-state-value");
        logins
            .finish(
                &sign_in(),
                &request,
                &callback,
                Some(cookie),
                &|_| true,
                now,
            )
            .await
            .err()
            .expect("the login must fail")
    }

    #[tokio::test]
    async fn an_expired_foreign_or_session_sealed_login_cookie_is_refused_before_the_provider() {
        let keys = KeyRing::new(&[[5; 32]]);
        let expired = sealed_login(&keys, "app.test", "the-state-value", NOW);
        assert!(matches!(
            finish_with(&expired, "app.test", &keys, NOW).await,
            LoginError::StateUnknown
        ));
        let other_host = sealed_login(&keys, "other.test", "the-state-value", NOW + 60);
        assert!(matches!(
            finish_with(&other_host, "app.test", &keys, NOW).await,
            LoginError::StateUnknown
        ));
        // A session cookie is sealed for another purpose and never opens as a login.
        let session = keys
            .seal(
                &Session {
                    subject: "s".into(),
                    email: None,
                    email_verified: false,
                    issuer: "i".into(),
                    groups: vec![],
                    expires_at: NOW + 60,
                },
                "app.test",
            )
            .unwrap();
        assert!(matches!(
            finish_with(&session, "app.test", &keys, NOW).await,
            LoginError::StateUnknown
        ));
        let wrong_state = sealed_login(&keys, "app.test", "another-state", NOW + 60);
        assert!(matches!(
            finish_with(&wrong_state, "app.test", &keys, NOW).await,
            LoginError::StateMismatch
        ));
    }

    #[test]
    fn every_failure_maps_to_the_code_users_look_up() {
        let failed = DiscoveryFailed {
            origin: "i".into(),
            detail: "d".into(),
        };
        assert_eq!(LoginError::ProviderUnavailable(failed).code().number(), 11);
        assert_eq!(LoginError::ClientRejected("x".into()).code().number(), 11);
        assert_eq!(LoginError::StateUnknown.code().number(), 9);
        assert_eq!(LoginError::ProviderRefused("x".into()).code().number(), 9);
        assert_eq!(LoginError::InvalidIdToken("x".into()).code().number(), 13);
    }

    #[test]
    fn callback_query_is_parsed_with_the_providers_error_description() {
        let callback = Callback::parse("code=abc&state=xyz%2F1&iss=http%3A%2F%2Fidp");
        assert_eq!(callback.code.as_deref(), Some("abc"));
        assert_eq!(callback.state.as_deref(), Some("xyz/1"));
        assert!(callback.error.is_none());
        let refused = Callback::parse("error=access_denied&error_description=User+said+no");
        assert_eq!(
            refused.error.as_deref(),
            Some("access_denied: User said no")
        );
    }

    #[test]
    fn login_cookie_names_are_cookie_safe_and_tell_tabs_apart() {
        assert_eq!(
            login_cookie_name("AbCdEf-_123456789"),
            "KUBE_IAP_LOGIN_AbCdEf-_1234"
        );
        assert_eq!(login_cookie_name("a;b=c d"), "KUBE_IAP_LOGIN_abcd");
        assert_ne!(
            login_cookie_name("tab-one-xxxxx"),
            login_cookie_name("tab-two-xxxxx")
        );
    }
}
