//! A small cookie-keeping HTTP client that walks redirects the way a browser does, so tests can
//! sign in through the real provider's login form without a browser. Every host is reached on
//! 127.0.0.1 at the URL's port, with the URL's host in the Host header.

use std::collections::BTreeMap;

use bytes::Bytes;
use url::Url;

use super::{Reply, send};

#[derive(Default)]
pub struct Browser {
    /// Cookies by `host:port`, then name. Paths are ignored: tests care about which host holds
    /// what, and sending a cookie to a wider path than set only makes the proxy's job harder.
    jar: BTreeMap<String, BTreeMap<String, String>>,
}

impl Browser {
    pub fn new() -> Self {
        Browser::default()
    }

    /// One request, no redirect followed; cookies are sent and stored.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let origin = origin(&parsed);
        let port = parsed.port_or_known_default().expect("a port");
        let target = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let cookies = self.cookie_header(&origin);
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if !cookies.is_empty() {
            headers.push(("cookie", &cookies));
        }
        if !body.is_empty() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let reply = send(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            method,
            &origin,
            &target,
            &headers,
            Bytes::from(body.to_string()),
        )
        .await;
        self.store(&origin, &reply);
        reply
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        self.request("GET", url, &[("accept", "text/html")], "")
            .await
    }

    /// Follows redirects from `url` until a response that is not one, or until the next hop
    /// would leave for `stop_at` (a URL prefix), returning that redirect instead.
    pub async fn follow(&mut self, url: &str, stop_at: Option<&str>) -> (String, Reply) {
        let mut current = url.to_string();
        for _ in 0..20 {
            let reply = self.get(&current).await;
            if !reply.status.is_redirection() {
                return (current, reply);
            }
            let next = resolve(&current, reply.header("location").expect("Location"));
            if stop_at.is_some_and(|prefix| next.starts_with(prefix)) {
                return (current, reply);
            }
            current = next;
        }
        panic!("more than 20 redirects from {url}");
    }

    /// Signs in as `login` at the provider's login form: from a URL that redirects to the
    /// provider, through the form, until the provider sends the browser back to the callback.
    /// Returns the callback URL (not yet visited).
    pub async fn sign_in_at_provider(&mut self, start: &str, login: &str) -> String {
        let (at, reply) = self.follow(start, None).await;
        assert!(
            reply.text().contains("name=\"login\""),
            "expected the provider's login form at {at}, got {}: {}",
            reply.status,
            reply.text()
        );
        let (action, hidden) = form_of(&at, &reply.text());
        let mut form = url::form_urlencoded::Serializer::new(hidden);
        let form = form
            .append_pair("login", login)
            .append_pair("password", "any")
            .finish();
        let posted = self
            .request("POST", &action, &[("accept", "text/html")], &form)
            .await;
        assert!(
            posted.status.is_redirection(),
            "login form answered {}: {}",
            posted.status,
            posted.text()
        );
        self.provider_redirects_to_callback(&resolve(&action, posted.header("location").unwrap()))
            .await
    }

    /// Follows the provider's redirects from `url` until one points at `/_iap/callback`.
    pub async fn provider_redirects_to_callback(&mut self, url: &str) -> String {
        let mut current = url.to_string();
        for _ in 0..10 {
            if current.contains("/_iap/callback") {
                return current;
            }
            let reply = self.get(&current).await;
            if reply.status == 200 && reply.text().contains("<form") {
                // A consent prompt (e.g. for offline_access): accept it.
                let (action, form) = form_of(&current, &reply.text());
                let posted = self
                    .request("POST", &action, &[("accept", "text/html")], &form)
                    .await;
                assert!(
                    posted.status.is_redirection(),
                    "consent answered {}",
                    posted.status
                );
                current = resolve(&action, posted.header("location").unwrap());
                continue;
            }
            assert!(
                reply.status.is_redirection(),
                "provider answered {} at {current}: {}",
                reply.status,
                reply.text()
            );
            current = resolve(&current, reply.header("location").unwrap());
        }
        panic!("the provider never redirected to the callback");
    }

    /// The cookies held for `url`'s host and port.
    pub fn cookies(&self, url: &str) -> BTreeMap<String, String> {
        let parsed = Url::parse(url).expect("URL");
        self.jar.get(&origin(&parsed)).cloned().unwrap_or_default()
    }

    pub fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        let parsed = Url::parse(url).expect("URL");
        self.jar
            .entry(origin(&parsed))
            .or_default()
            .insert(name.to_string(), value.to_string());
    }

    fn cookie_header(&self, origin: &str) -> String {
        self.jar
            .get(origin)
            .map(|cookies| {
                cookies
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    fn store(&mut self, origin: &str, reply: &Reply) {
        for header in reply.headers.get_all("set-cookie") {
            let text = header.to_str().expect("ASCII Set-Cookie");
            let pair = text.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = text.to_ascii_lowercase().contains("max-age=0")
                || text
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            let cookies = self.jar.entry(origin.to_string()).or_default();
            if expired || value.is_empty() {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_string(), value.to_string());
            }
        }
    }
}

/// The first form of `html`: its action (resolved against `base`) and its hidden fields, encoded.
fn form_of(base: &str, html: &str) -> (String, String) {
    let action = attribute_after(html, "<form", "action").expect("the form has an action");
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    let mut rest = html;
    while let Some(at_input) = rest.find("type=\"hidden\"") {
        let tag_start = rest[..at_input].rfind('<').unwrap_or(0);
        let tag = &rest[tag_start..];
        if let (Some(name), Some(value)) = (
            attribute_after(tag, "<input", "name"),
            attribute_after(tag, "<input", "value"),
        ) {
            form.append_pair(&name, &value);
        }
        rest = &rest[at_input + 1..];
    }
    (resolve(base, &action), form.finish())
}

/// The value of `name="..."` in the first `tag` element of `html`.
fn attribute_after(html: &str, tag: &str, name: &str) -> Option<String> {
    let start = html.find(tag)?;
    let end = start + html[start..].find('>')?;
    let element = &html[start..end];
    let marker = format!("{name}=\"");
    let value_start = element.find(&marker)? + marker.len();
    let value_len = element[value_start..].find('"')?;
    Some(element[value_start..value_start + value_len].to_string())
}

fn origin(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().expect("a host"),
        url.port_or_known_default().expect("a port")
    )
}

/// `location` resolved against `base`, as a browser does.
pub fn resolve(base: &str, location: &str) -> String {
    Url::parse(base)
        .and_then(|base| base.join(location))
        .map(|url| url.to_string())
        .unwrap_or_else(|e| panic!("bad Location {location:?}: {e}"))
}
