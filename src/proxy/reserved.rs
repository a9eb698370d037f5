//! The proxy's own paths under `/_iap/`, answered on every host kube-iap serves.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HeaderValue, LOCATION, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};

use super::pages::{self, Answer};
use super::{Proxy, ProxyBody};
use crate::auth::assertion::SigningKeys;
use crate::auth::cookies::{
    UID_COOKIE, cookie_value, proxy_cookie_names, session_cookie_name, set_cookie,
};
use crate::auth::login::{CALLBACK_PATH, Callback, LoginRequest, login_cookie_name};
use crate::auth::session::{session_from, unix_now};
use crate::model::Route;

pub const IDENTITY: &str = "/_iap/identity";
pub const JWKS: &str = "/_iap/jwks.json";
pub const CLEAR_LOGIN_COOKIE: &str = "/_iap/clear_login_cookie";
pub const SESSION_REFRESH: &str = "/_iap/session_refresh";
/// Where `/_iap/session_refresh` sends the browser back to once signed in again.
const SESSION_REFRESHED: &str = "/_iap/session_refresh?done=1";

/// Everything a reserved path may need about the request.
pub struct Reserved<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub login: LoginRequest<'a>,
    /// The host's routes (longest prefix first), for its sign-in settings and named groups.
    pub routes: &'a [Arc<Route>],
    /// The client's address, for the per-address sign-in limit.
    pub client: std::net::IpAddr,
    pub signing_keys: &'a SigningKeys,
    pub request_id: &'a HeaderValue,
}

impl Proxy {
    pub(super) async fn reserved(
        &self,
        request: Reserved<'_>,
    ) -> Result<Response<ProxyBody>, Answer> {
        if matches!(request.path, CALLBACK_PATH | SESSION_REFRESH) {
            self.limit_sign_in(&request)?;
        }
        match request.path {
            IDENTITY => identity(&request),
            JWKS => Ok(pages::generated(
                StatusCode::OK,
                "application/json",
                self.jwks.document(request.signing_keys).to_string(),
                request.request_id,
            )),
            CALLBACK_PATH => self.callback(&request).await,
            CLEAR_LOGIN_COOKIE => Ok(self.clear_login_cookie(&request).await),
            SESSION_REFRESH if is_done(request.query) => session_refreshed(&request),
            SESSION_REFRESH => self.start_login(&request, SESSION_REFRESHED).await,
            _ => Err(Answer::UnknownReservedPath),
        }
    }

    /// Sign-in redirects and callbacks are limited per client address, so a flood cannot turn
    /// the proxy against the identity provider.
    fn limit_sign_in(&self, request: &Reserved<'_>) -> Result<(), Answer> {
        self.sign_in_limit.check(request.client).map_err(|wait| {
            self.metrics
                .rate_limited
                .with_label_values(&["sign-in"])
                .inc();
            Answer::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    /// Sends the browser to the identity provider; it comes back to `/_iap/callback`.
    pub(super) async fn start_login(
        &self,
        request: &Reserved<'_>,
        return_to: &str,
    ) -> Result<Response<ProxyBody>, Answer> {
        if request.path != SESSION_REFRESH {
            self.limit_sign_in(request)?;
        }
        let sign_in = host_sign_in(request.routes)?;
        let start = self
            .logins
            .start(sign_in, &request.login, return_to, unix_now())
            .await
            .map_err(|error| {
                tracing::warn!(request_id = request.request_id.to_str().unwrap_or("-"), client = %sign_in.client.name, %error, "sign-in could not start");
                Answer::SignInFailed(error.code())
            })?;
        let mut response = redirect(&start.authorize_url, request.request_id)?;
        response.headers_mut().append(
            SET_COOKIE,
            set_cookie(
                &start.cookie_name,
                &start.cookie_value,
                CALLBACK_PATH,
                crate::auth::login::LOGIN_TTL.as_secs(),
                request.login.tls,
            ),
        );
        Ok(response)
    }

    async fn callback(&self, request: &Reserved<'_>) -> Result<Response<ProxyBody>, Answer> {
        let sign_in = host_sign_in(request.routes)?;
        let callback = Callback::parse(request.query);
        let cookie_name = callback.state.as_deref().map(login_cookie_name);
        let login_cookie = cookie_name
            .as_deref()
            .and_then(|name| cookie_value(request.headers, name));
        let keep_group = |group: &str| {
            request
                .routes
                .iter()
                .any(|route| route.access.needs_group(group))
        };
        let now = unix_now();
        let result = self
            .logins
            .finish(
                sign_in,
                &request.login,
                &callback,
                login_cookie,
                &keep_group,
                now,
            )
            .await;
        let tls = request.login.tls;
        let forget_login = cookie_name.map(|name| set_cookie(&name, "", CALLBACK_PATH, 0, tls));
        let done = match result {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(request_id = request.request_id.to_str().unwrap_or("-"), client = %sign_in.client.name, %error, "sign-in failed");
                let mut response = pages::respond(
                    &Answer::SignInFailed(error.code()),
                    pages::Format::Html,
                    request.request_id,
                );
                response
                    .headers_mut()
                    .extend(forget_login.map(|c| (SET_COOKIE, c)));
                return Ok(response);
            }
        };
        let sealed = request
            .login
            .keys
            .seal(&done.session, request.login.host)
            .map_err(|error| {
                tracing::warn!(%error, "session does not fit in a cookie");
                Answer::SignInFailed(crate::error_codes::ErrorCode::OAuthFlowFailed)
            })?;
        tracing::info!(
            request_id = request.request_id.to_str().unwrap_or("-"),
            client = %sign_in.client.name,
            subject = %done.session.subject,
            "signed in"
        );
        let max_age = done.session.expires_at.saturating_sub(now);
        let mut response = redirect(&done.return_to, request.request_id)?;
        let headers = response.headers_mut();
        headers.append(
            SET_COOKIE,
            set_cookie(
                &session_cookie_name(request.login.host),
                &sealed,
                "/",
                max_age,
                tls,
            ),
        );
        headers.append(
            SET_COOKIE,
            set_cookie(
                UID_COOKIE,
                &URL_SAFE_NO_PAD.encode(&done.session.subject),
                "/",
                max_age,
                tls,
            ),
        );
        headers.extend(forget_login.map(|c| (SET_COOKIE, c)));
        Ok(response)
    }

    /// Expires every proxy cookie, then signs out at the provider when it supports
    /// RP-initiated logout; otherwise shows a signed-out page.
    async fn clear_login_cookie(&self, request: &Reserved<'_>) -> Response<ProxyBody> {
        let logout_url = match host_sign_in(request.routes) {
            Ok(sign_in) => self
                .logins
                .providers()
                .metadata(&sign_in.client.issuer)
                .await
                .ok()
                .and_then(|found| {
                    let endpoint = found
                        .document()
                        .additional_metadata()
                        .end_session_endpoint
                        .clone()?;
                    let mut url = endpoint.url().clone();
                    url.query_pairs_mut()
                        .append_pair("client_id", &sign_in.client.client_id);
                    Some(url.to_string())
                }),
            Err(_) => None,
        };
        let mut response = match logout_url.and_then(|url| redirect(&url, request.request_id).ok())
        {
            Some(response) => response,
            None => {
                let body = pages::simple_page(
                    "Signed out",
                    "<p>You are signed out of this application.</p>",
                );
                pages::generated(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    body,
                    request.request_id,
                )
            }
        };
        let tls = request.login.tls;
        let session_cookie = session_cookie_name(request.login.host);
        let mut names: Vec<&str> = proxy_cookie_names(request.headers).collect();
        names.extend([session_cookie.as_str(), UID_COOKIE]);
        names.sort_unstable();
        names.dedup();
        for name in names {
            response
                .headers_mut()
                .append(SET_COOKIE, set_cookie(name, "", "/", 0, tls));
        }
        response
    }
}

/// How users sign in on the host of `routes`. Every policy on a host shares one OAuth client (a
/// second one fails closed with code 9), so any route's client serves the host's reserved paths.
fn host_sign_in(routes: &[Arc<Route>]) -> Result<&crate::model::SignIn, Answer> {
    routes
        .iter()
        .find_map(|route| route.sign_in.as_deref())
        .ok_or_else(|| {
            // Every route of the host fails closed; say why with the first one's code.
            let code = routes.iter().find_map(|route| match &route.action {
                crate::model::RouteAction::FailClosed { code, .. } => *code,
                crate::model::RouteAction::Forward(_)
                | crate::model::RouteAction::Unprotected { .. }
                | crate::model::RouteAction::Redirect(_) => None,
            });
            Answer::Misconfigured(code)
        })
}

fn identity(request: &Reserved<'_>) -> Result<Response<ProxyBody>, Answer> {
    let session = session_from(request.headers, request.login.host, request.login.keys)
        .ok_or(Answer::Unauthenticated)?;
    let body = serde_json::json!({
        "email": session.email,
        "emailVerified": session.email_verified,
        "sub": session.subject,
        "issuer": session.issuer,
        "expiresAt": session.expires_at,
    });
    Ok(pages::generated(
        StatusCode::OK,
        "application/json",
        body.to_string(),
        request.request_id,
    ))
}

fn is_done(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes())
        .any(|(name, value)| name == "done" && value == "1")
}

/// The script of the page `/_iap/session_refresh` ends on: tell the opener, then close.
const REFRESHED_SCRIPT: &str = "try{window.opener&&window.opener.postMessage({type:'kube-iap:session-refreshed'},location.origin)}finally{window.close()}";

fn session_refreshed(request: &Reserved<'_>) -> Result<Response<ProxyBody>, Answer> {
    session_from(request.headers, request.login.host, request.login.keys)
        .ok_or(Answer::SessionRefreshIncomplete)?;
    let body = pages::simple_page(
        "Signed in",
        &format!(
            "<p>You are signed in again. This window closes by itself; if it does not, close it.</p>\
             <script>{REFRESHED_SCRIPT}</script>"
        ),
    );
    let mut response = pages::generated(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body,
        request.request_id,
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, REFRESHED_SCRIPT.as_bytes());
    let csp = format!(
        "{}; script-src 'sha256-{}'",
        pages::PAGE_CSP,
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    );
    response.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).expect("a CSP of ASCII is a header value"),
    );
    Ok(response)
}

/// A 302 the proxy generates, to the provider or back to the app.
fn redirect(location: &str, request_id: &HeaderValue) -> Result<Response<ProxyBody>, Answer> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| Answer::SignInFailed(crate::error_codes::ErrorCode::OAuthFlowFailed))?;
    let mut response = pages::generated(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        String::new(),
        request_id,
    );
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}
