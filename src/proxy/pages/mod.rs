//! Every response the proxy generates itself. One enum names each case; one function turns it into
//! a response, HTML for browsers and JSON for everyone else, marked with
//! `x-kube-iap-generated-response: true`. Nothing secret goes in: no header values, no cookies, no
//! tokens, no internal reasons (those go to the log).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::error_codes::ErrorCode;

mod grpc;

pub const GENERATED_HEADER: &str = "x-kube-iap-generated-response";
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Why the proxy answers instead of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The request has no usable Host.
    MissingHost,
    /// The path cannot be normalised.
    BadPath(String),
    /// No route for this host and path.
    NoRoute,
    /// A reserved `/_iap/` path that does not exist.
    UnknownReservedPath,
    /// The route's resource is invalid; it fails closed.
    Misconfigured(Option<ErrorCode>),
    /// A Gateway API route no IapPolicy protects: refused, never served open.
    Unprotected,
    /// Authentication is required and none was presented.
    Unauthenticated,
    /// Over the policy's (or the sign-in endpoints' per-address) request rate.
    RateLimited { retry_after_secs: u64 },
    /// A bearer token was presented and failed verification (code 13); cookies are not
    /// consulted instead.
    InvalidToken,
    /// A CORS preflight on a policy that does not forward them: credentials must be attached.
    PreflightNeedsCredentials,
    /// A sign-in could not start or complete; the code says why (9, 11 or 13).
    SignInFailed(ErrorCode),
    /// `/_iap/session_refresh` came back without a session (cookies blocked, or it was opened
    /// by hand).
    SessionRefreshIncomplete,
    /// Signed in, but the policy does not grant this identity access.
    Forbidden {
        identity: String,
        /// `namespace/name` of the IapPolicy that decided.
        policy: String,
        /// Why, naming rules and conditions, never other users.
        reason: String,
    },
    /// The backend Service has no ready endpoint.
    NoHealthyUpstream,
    /// The backend refused or dropped the connection.
    UpstreamUnavailable,
    /// The backend did not answer in time.
    UpstreamTimeout,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::MissingHost | Answer::BadPath(_) => StatusCode::BAD_REQUEST,
            Answer::NoRoute | Answer::UnknownReservedPath => StatusCode::NOT_FOUND,
            Answer::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::SignInFailed(ErrorCode::OAuthClientMisconfigured) => StatusCode::BAD_GATEWAY,
            Answer::SignInFailed(_) | Answer::SessionRefreshIncomplete => StatusCode::BAD_REQUEST,
            Answer::Unauthenticated | Answer::InvalidToken => StatusCode::UNAUTHORIZED,
            Answer::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Answer::PreflightNeedsCredentials => StatusCode::METHOD_NOT_ALLOWED,
            Answer::Forbidden { .. } | Answer::Unprotected => StatusCode::FORBIDDEN,
            Answer::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Answer::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Answer::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Answer::Misconfigured(code) => *code,
            Answer::SignInFailed(code) => Some(*code),
            Answer::InvalidToken => Some(ErrorCode::InvalidToken),
            Answer::RateLimited { .. } => Some(ErrorCode::RateLimited),
            Answer::SessionRefreshIncomplete => Some(ErrorCode::OAuthFlowFailed),
            _ => None,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Answer::MissingHost => "Bad request",
            Answer::BadPath(_) => "Bad request",
            Answer::NoRoute => "Not found",
            Answer::UnknownReservedPath => "Not found",
            Answer::Misconfigured(_) => "This application is not configured correctly",
            Answer::Unprotected => "No policy protects this address",
            Answer::Unauthenticated => "Authentication required",
            Answer::InvalidToken => "Invalid token",
            Answer::RateLimited { .. } => "Too many requests",
            Answer::SignInFailed(_) | Answer::SessionRefreshIncomplete => "Sign-in failed",
            Answer::PreflightNeedsCredentials => "Credentials required",
            Answer::Forbidden { .. } => "Access denied",
            Answer::NoHealthyUpstream => "Service unavailable",
            Answer::UpstreamUnavailable => "Bad gateway",
            Answer::UpstreamTimeout => "Gateway timeout",
        }
    }

    fn detail(&self) -> String {
        match self {
            Answer::MissingHost => "The request names no host.".into(),
            Answer::BadPath(reason) => format!("The request path is not valid: {reason}."),
            Answer::NoRoute => "No application is served at this address.".into(),
            Answer::UnknownReservedPath => "Paths under /_iap/ belong to kube-iap, and this one does not exist.".into(),
            Answer::Misconfigured(Some(code)) => format!("{} {}", code.headline(), code.info().remedy),
            Answer::Misconfigured(None) => {
                "The IapPolicy for this address is invalid, so access is closed. Its status says why.".into()
            }
            Answer::Unprotected => "This address is routed by a Gateway API route, but no IapPolicy protects it, \
                 so kube-iap refuses every request to it. Attach an IapPolicy to the route or its Gateway with \
                 spec.targetRefs (an allUsers access rule opens it to everyone); the route's status says the same."
                .into(),
            Answer::RateLimited { retry_after_secs } => format!(
                "{} Try again in {retry_after_secs} s.",
                ErrorCode::RateLimited.headline()
            ),
            Answer::InvalidToken => format!(
                "{} Send an unexpired ID token issued by the application's identity provider for its \
                 OAuth client ID (or a configured audience or trusted issuer).",
                ErrorCode::InvalidToken.headline()
            ),
            Answer::SignInFailed(code) => format!("{} {}", code.headline(), code.info().remedy),
            Answer::SessionRefreshIncomplete => "The sign-in did not complete: no session cookie came back. \
                 Check that the browser accepts cookies for this site, then try again."
                .into(),
            Answer::Unauthenticated => "This application requires authentication. Programs send an \
                 OpenID Connect ID token as Authorization: Bearer ID_TOKEN; browser scripts send the sign-in \
                 cookies with XMLHttpRequest.withCredentials = true or fetch(url, {credentials: 'include'})."
                .into(),
            Answer::PreflightNeedsCredentials => "Cross-origin requests to this application must carry \
                 credentials: set XMLHttpRequest.withCredentials = true or fetch(url, {credentials: 'include'}). \
                 To let CORS preflights through without credentials, set spec.cors.allowHttpOptions on the IapPolicy."
                .into(),
            Answer::Forbidden {
                identity,
                policy,
                reason,
            } => format!(
                "You are signed in as {identity}, and the IapPolicy {policy} does not grant you access \
                 to this page. {reason} To use another account, sign out at /_iap/clear_login_cookie."
            ),
            Answer::NoHealthyUpstream => "The application has no ready instance. Try again shortly.".into(),
            Answer::UpstreamUnavailable => "The application could not be reached.".into(),
            Answer::UpstreamTimeout => "The application did not answer in time.".into(),
        }
    }
}

/// How a generated answer is written for the client that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A page, for browsers.
    Html,
    /// A JSON error, for programs.
    Json,
    /// A gRPC status (`grpc-status`, `grpc-message`) in a headers-only response, for gRPC
    /// clients: they read no HTTP status or body.
    Grpc,
}

impl Format {
    /// The format the request's headers ask for.
    pub fn of(headers: &HeaderMap) -> Self {
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            Format::Grpc
        } else if wants_html(headers) {
            Format::Html
        } else {
            Format::Json
        }
    }
}

/// Whether the client prefers a page over JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("text/html"))
}

pub fn respond(answer: &Answer, format: Format, request_id: &HeaderValue) -> Response<ProxyBody> {
    let status = answer.status();
    let id = request_id.to_str().unwrap_or("-");
    let mut response = match format {
        Format::Html => generated(
            status,
            "text/html; charset=utf-8",
            html_page(answer, status, id),
            request_id,
        ),
        Format::Json => generated(
            status,
            "application/json",
            json_body(answer, status, id),
            request_id,
        ),
        Format::Grpc => grpc::status_response(answer, request_id),
    };
    let challenge = match answer {
        Answer::Unauthenticated => Some("Bearer realm=\"kube-iap\""),
        Answer::InvalidToken => Some("Bearer realm=\"kube-iap\", error=\"invalid_token\""),
        _ => None,
    };
    if let Answer::RateLimited { retry_after_secs } = answer {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// A Gateway API route's redirect: `status` (301, 302, 303, 307 or 308) to `location`.
pub fn redirect(
    status: u16,
    location: &str,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, Answer> {
    let location = HeaderValue::from_str(location).map_err(|_| Answer::Misconfigured(None))?;
    let status = StatusCode::from_u16(status).map_err(|_| Answer::Misconfigured(None))?;
    let mut response = generated(
        status,
        "text/plain; charset=utf-8",
        String::new(),
        request_id,
    );
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// A response the proxy generates itself: never cached, never sniffed, marked as generated.
pub fn generated(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(GENERATED_HEADER, HeaderValue::from_static("true"));
    // Pages hold no script and load nothing; a page that needs a script replaces this.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(super::request_id::X_REQUEST_ID, request_id.clone());
    response
}

/// Every page the proxy shows, in one style; `body_html` must already be escaped.
pub fn simple_page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
.code{{font-weight:bold}}.meta{{color:#666;font-size:.85rem}}</style>\
</head><body><h1>{title}</h1>{body_html}</body></html>\n",
        title = escape(title),
    )
}

fn json_body(answer: &Answer, status: StatusCode, request_id: &str) -> String {
    let mut error = serde_json::json!({
        "status": status.as_u16(),
        "title": answer.title(),
        "message": answer.detail(),
        "requestId": request_id,
    });
    if let Some(code) = answer.code() {
        error["errorCode"] = code.number().into();
    }
    if let Answer::Forbidden {
        identity,
        policy,
        reason,
    } = answer
    {
        error["identity"] = identity.as_str().into();
        error["policy"] = policy.as_str().into();
        error["reason"] = reason.as_str().into();
    }
    serde_json::json!({ "error": error }).to_string()
}

fn html_page(answer: &Answer, status: StatusCode, request_id: &str) -> String {
    let code_line = match answer.code() {
        Some(code) => format!("<p class=\"code\">Error code {}</p>", code.number()),
        None => String::new(),
    };
    let action = match answer {
        Answer::Forbidden { .. } => {
            "<p><a href=\"/_iap/clear_login_cookie\">Sign out to use another account</a></p>"
        }
        Answer::SignInFailed(_) | Answer::SessionRefreshIncomplete => {
            "<p><a href=\"/\">Start again</a></p>"
        }
        _ => "",
    };
    let body = format!(
        "{code_line}<p>{detail}</p>{action}<p class=\"meta\">HTTP {status} · request {request_id} · kube-iap</p>",
        status = status.as_u16(),
        detail = escape(&answer.detail()),
        request_id = escape(request_id),
    );
    simple_page(answer.title(), &body)
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misconfigured_routes_show_their_error_code_in_both_formats() {
        let answer = Answer::Misconfigured(Some(ErrorCode::OAuthClientCredentialsMissing));
        let html = html_page(&answer, answer.status(), "req-1");
        assert!(html.contains("Error code 7"), "{html}");
        let json: serde_json::Value =
            serde_json::from_str(&json_body(&answer, answer.status(), "req-1")).unwrap();
        assert_eq!(json["error"]["errorCode"], 7);
        assert_eq!(json["error"]["status"], 500);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
