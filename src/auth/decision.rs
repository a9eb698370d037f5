//! The unauthenticated decision: what a request without valid credentials gets. One pure function,
//! so every row of the table is tested without a network.

use http::header::{ACCEPT, HeaderMap};
use http::{HeaderName, Method};

/// What happens to a request that presented no valid credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// A CORS preflight on a policy with `cors.allowHttpOptions`: forwarded without identity.
    ForwardPreflight,
    /// A CORS preflight otherwise: 405, explaining that credentials must be attached.
    PreflightNeedsCredentials,
    /// A browser navigation: 302 to the identity provider.
    SignIn,
    /// Everything else (scripts, XHRs, writes): 401 with `WWW-Authenticate: Bearer`.
    Unauthorized,
}

const ORIGIN: HeaderName = http::header::ORIGIN;
const PREFLIGHT_METHOD: HeaderName = http::header::ACCESS_CONTROL_REQUEST_METHOD;
const REQUESTED_WITH: &str = "x-requested-with";

pub fn decide(method: &Method, headers: &HeaderMap, allow_http_options: bool) -> Unauthenticated {
    if *method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(PREFLIGHT_METHOD)
    {
        return if allow_http_options {
            Unauthenticated::ForwardPreflight
        } else {
            Unauthenticated::PreflightNeedsCredentials
        };
    }
    let navigation = *method == Method::GET || *method == Method::HEAD;
    if navigation && accepts_html(headers) && !is_xhr(headers) {
        return Unauthenticated::SignIn;
    }
    Unauthenticated::Unauthorized
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

fn is_xhr(headers: &HeaderMap) -> bool {
    headers
        .get_all(REQUESTED_WITH)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
}

#[cfg(test)]
mod tests {
    use super::Unauthenticated::*;
    use super::*;

    /// Method, headers, `cors.allowHttpOptions`, expected decision.
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, Unauthenticated);

    const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.parse::<HeaderName>().unwrap(), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn every_row_of_the_decision_table() {
        let preflight = [
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ];
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // CORS preflight
            ("OPTIONS", &preflight, true, ForwardPreflight),
            ("OPTIONS", &preflight, false, PreflightNeedsCredentials),
            ("OPTIONS", &[("origin", "https://a.example.com")], true, Unauthorized),
            ("OPTIONS", &[], true, Unauthorized),
            // browser navigations
            ("GET", &[("accept", BROWSER_ACCEPT)], false, SignIn),
            ("HEAD", &[("accept", "text/html")], false, SignIn),
            ("GET", &[("accept", "TEXT/HTML")], false, SignIn),
            // XHRs and scripts
            ("GET", &[("accept", BROWSER_ACCEPT), ("x-requested-with", "XMLHttpRequest")], false, Unauthorized),
            ("GET", &[("accept", "*/*")], false, Unauthorized),
            ("GET", &[("accept", "application/json")], false, Unauthorized),
            ("GET", &[], false, Unauthorized),
            // writes never redirect, whatever Accept says
            ("POST", &[("accept", BROWSER_ACCEPT)], false, Unauthorized),
            ("PUT", &[("accept", BROWSER_ACCEPT)], false, Unauthorized),
            ("PATCH", &[("accept", BROWSER_ACCEPT)], false, Unauthorized),
            ("DELETE", &[("accept", BROWSER_ACCEPT)], false, Unauthorized),
        ];
        for (method, pairs, allow, want) in rows {
            let got = decide(&method.parse().unwrap(), &headers(pairs), *allow);
            assert_eq!(got, *want, "{method} {pairs:?} allowHttpOptions={allow}");
        }
    }
}
