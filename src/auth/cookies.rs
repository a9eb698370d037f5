//! The proxy's cookies in a request: reading session cookies, and removing every proxy cookie
//! before the request goes upstream while the app's own cookies pass byte for byte.

use http::header::{COOKIE, HeaderMap, HeaderValue};

/// Prefix of every cookie kube-iap sets.
pub const PROXY_COOKIE_PREFIX: &str = "KUBE_IAP_";
/// Session cookies: `KUBE_IAP_AUTH_TOKEN_<suffix>`. Several may arrive at once (set for different
/// paths or parent domains); any one valid for the host authenticates.
pub const SESSION_COOKIE_PREFIX: &str = "KUBE_IAP_AUTH_TOKEN_";

/// `name=value` pairs of every Cookie header (HTTP/2 sends one header per cookie).
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// The cookie carrying the user's opaque id.
pub const UID_COOKIE: &str = "KUBE_IAP_UID";

/// The session cookie's name on `host`. Cookies are host-only, so the suffix only has to be
/// stable per host; deriving it from the host keeps re-sign-ins overwriting one cookie.
pub fn session_cookie_name(host: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, host.to_ascii_lowercase().as_bytes());
    let suffix: String = digest.as_ref()[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{SESSION_COOKIE_PREFIX}{suffix}")
}

/// A `Set-Cookie` value for one of the proxy's cookies: HttpOnly, SameSite=Lax, Secure on TLS.
/// `max_age` of zero expires the cookie.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).expect("cookie names and sealed values are header-safe")
}

/// The value of the first cookie called `name`.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Values of the session cookies, in the order sent.
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    pairs(headers)
        .filter(|(name, _)| name.starts_with(SESSION_COOKIE_PREFIX))
        .map(|(_, value)| value)
}

/// Names of the proxy's cookies in the request, for signing out.
pub fn proxy_cookie_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    pairs(headers)
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(PROXY_COOKIE_PREFIX))
}

/// Removes the proxy's cookies; a Cookie header left empty is dropped. It runs on every
/// authenticated request, so it works on the header's bytes with memchr's searches rather than
/// pair by pair, and the app's cookies pass as they came, text or not.
pub fn strip_proxy_cookies(headers: &mut HeaderMap) {
    let prefix = PROXY_COOKIE_PREFIX.as_bytes();
    // One search per header: a request without the prefix anywhere carries none of our cookies.
    if !headers
        .get_all(COOKIE)
        .iter()
        .any(|value| memchr::memmem::find(value.as_bytes(), prefix).is_some())
    {
        return;
    }
    let mut kept = Vec::new();
    for value in headers.get_all(COOKIE) {
        let bytes = value.as_bytes();
        let mut start = 0;
        for end in memchr::memchr_iter(b';', bytes).chain([bytes.len()]) {
            let pair = bytes[start..end].trim_ascii();
            start = end + 1;
            if pair.is_empty() || pair.starts_with(prefix) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(&kept) {
            headers.insert(COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for cookie in cookies {
            map.append(COOKIE, cookie.parse().unwrap());
        }
        map
    }

    #[test]
    fn every_session_cookie_copy_is_found_in_order() {
        let map = headers(&[
            "app=1; KUBE_IAP_AUTH_TOKEN_a=first",
            "KUBE_IAP_AUTH_TOKEN_b=second;KUBE_IAP_UID=u",
        ]);
        assert_eq!(
            session_cookies(&map).collect::<Vec<_>>(),
            ["first", "second"]
        );
    }

    #[test]
    fn an_app_cookie_that_is_not_text_passes_byte_for_byte() {
        let mut map = HeaderMap::new();
        map.append(
            COOKIE,
            HeaderValue::from_bytes(b"caf\xe9=cr\xe8me; KUBE_IAP_UID=u").unwrap(),
        );
        strip_proxy_cookies(&mut map);
        assert_eq!(map.get(COOKIE).unwrap().as_bytes(), b"caf\xe9=cr\xe8me");
    }

    #[test]
    fn proxy_cookies_are_removed_and_the_apps_kept_exactly() {
        let mut map = headers(&[
            "app=a=b; KUBE_IAP_AUTH_TOKEN_x=secret; theme=\"dark\"",
            "KUBE_IAP_UID=u",
        ]);
        strip_proxy_cookies(&mut map);
        assert_eq!(
            map.get_all(COOKIE).iter().collect::<Vec<_>>(),
            ["app=a=b; theme=\"dark\""]
        );

        let mut lookalike = headers(&["note=KUBE_IAP_is_not_a_name; KUBE_IAP_UID=u"]);
        strip_proxy_cookies(&mut lookalike);
        assert_eq!(
            lookalike.get(COOKIE).unwrap(),
            "note=KUBE_IAP_is_not_a_name"
        );

        let mut only_proxy = headers(&["KUBE_IAP_AUTH_TOKEN_x=secret"]);
        strip_proxy_cookies(&mut only_proxy);
        assert!(only_proxy.get(COOKIE).is_none());

        let mut untouched = headers(&["a=1;b=2"]);
        strip_proxy_cookies(&mut untouched);
        assert_eq!(
            untouched.get(COOKIE).unwrap(),
            "a=1;b=2",
            "no proxy cookie: the header is not rewritten"
        );
    }
}
