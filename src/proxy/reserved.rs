//! The proxy's own paths under `/_iap/`, answered on every host it serves.

use http::header::{HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};

use super::ProxyBody;
use super::pages::{self, Answer};
use crate::auth::cookies::proxy_cookie_names;
use crate::auth::session::{KeyRing, session_from};

pub const IDENTITY: &str = "/_iap/identity";
pub const CLEAR_LOGIN_COOKIE: &str = "/_iap/clear_login_cookie";

/// Answers a reserved path, or says it does not exist.
pub fn answer(
    path: &str,
    headers: &HeaderMap,
    host: &str,
    keys: &KeyRing,
    tls: bool,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, Answer> {
    match path {
        IDENTITY => identity(headers, host, keys, request_id),
        CLEAR_LOGIN_COOKIE => Ok(clear_login_cookie(headers, tls, request_id)),
        _ => Err(Answer::UnknownReservedPath),
    }
}

/// Who is signed in, even when the policy would deny them: the first thing to check when access
/// is refused.
fn identity(
    headers: &HeaderMap,
    host: &str,
    keys: &KeyRing,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, Answer> {
    let session = session_from(headers, host, keys).ok_or(Answer::Unauthenticated)?;
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
        request_id,
    ))
}

/// Signs out of this host: every proxy cookie the browser sent is expired.
fn clear_login_cookie(
    headers: &HeaderMap,
    tls: bool,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let names: Vec<&str> = proxy_cookie_names(headers).collect();
    let body = pages::simple_page(
        "Signed out",
        "<p>You are signed out of this application.</p>",
    );
    let mut response =
        pages::generated(StatusCode::OK, "text/html; charset=utf-8", body, request_id);
    let secure = if tls { "; Secure" } else { "" };
    for name in names {
        let expired = format!("{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}");
        if let Ok(value) = HeaderValue::from_str(&expired) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}
