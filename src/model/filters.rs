//! What a Gateway API route does to a request besides forwarding it: header edits both ways,
//! a rewritten path or host, or a redirect instead of a backend.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Header edits of a `RequestHeaderModifier` or `ResponseHeaderModifier` filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Replace every value of the header with this one.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Add a value, keeping those present.
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// How a path is rewritten (for the backend) or redirected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path becomes this.
    Full(String),
    /// The prefix the route matched becomes this; the rest of the path stays.
    Prefix(String),
}

impl PathRewrite {
    /// `path` rewritten, `matched` being the prefix the route matched (segment-wise).
    pub fn apply(&self, path: &str, matched: &str) -> String {
        match self {
            PathRewrite::Full(full) => full.clone(),
            PathRewrite::Prefix(replacement) => {
                let matched = matched.trim_end_matches('/');
                let rest = path.get(matched.len()..).unwrap_or("");
                let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
                if joined.is_empty() {
                    "/".to_string()
                } else if joined.starts_with('/') {
                    joined
                } else {
                    format!("/{joined}")
                }
            }
        }
    }
}

/// A `URLRewrite` filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<HeaderValue>,
    pub path: Option<PathRewrite>,
}

/// A `RequestRedirect` filter: the route answers with this redirect instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status: u16,
    /// The port of the listener the route is served on: where a redirect that changes neither
    /// scheme nor port points.
    pub listener_port: u16,
}

impl Redirect {
    /// The `Location` for a request to `host` (no port) and `path_and_query`, over TLS or not;
    /// `matched` is the prefix the route matched.
    pub fn location(
        &self,
        tls: bool,
        host: &str,
        path: &str,
        query: Option<&str>,
        matched: &str,
    ) -> String {
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or(if tls { "https" } else { "http" });
        let well_known = if scheme == "https" { 443 } else { 80 };
        let port = match (self.port, &self.scheme) {
            (Some(port), _) => port,
            (None, Some(_)) => well_known,
            (None, None) => self.listener_port,
        };
        let host = self.hostname.as_deref().unwrap_or(host);
        let authority = if port == well_known {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let path = match &self.path {
            Some(rewrite) => rewrite.apply(path, matched),
            None => path.to_string(),
        };
        match query {
            Some(query) => format!("{scheme}://{authority}{path}?{query}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    }
}

/// Everything a Gateway API rule's filters do to a forwarded request and its response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteFilters {
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub rewrite: Option<Rewrite>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_replace_only_the_matched_segments() {
        let cases = [
            ("/foo", "/bar", "/foo/baz", "/bar/baz"),
            ("/foo", "/bar", "/foo", "/bar"),
            ("/foo/", "/bar", "/foo/baz", "/bar/baz"),
            ("/foo", "/", "/foo/baz", "/baz"),
            ("/foo", "/", "/foo", "/"),
            ("/", "/api", "/x/y", "/api/x/y"),
            ("/foo", "/bar/", "/foo/baz", "/bar/baz"),
        ];
        for (matched, replacement, path, want) in cases {
            let got = PathRewrite::Prefix(replacement.into()).apply(path, matched);
            assert_eq!(got, want, "{matched} -> {replacement} on {path}");
        }
        assert_eq!(PathRewrite::Full("/one".into()).apply("/a/b", "/a"), "/one");
    }

    #[test]
    fn redirects_keep_what_they_do_not_change_and_drop_well_known_ports() {
        let redirect = |scheme: Option<&str>, port: Option<u16>| Redirect {
            scheme: scheme.map(str::to_string),
            hostname: None,
            port,
            path: None,
            status: 302,
            listener_port: 80,
        };
        assert_eq!(
            redirect(Some("https"), None).location(false, "a.test", "/x", Some("q=1"), "/"),
            "https://a.test/x?q=1"
        );
        assert_eq!(
            redirect(None, Some(8080)).location(false, "a.test", "/x", None, "/"),
            "http://a.test:8080/x"
        );
        assert_eq!(
            redirect(None, None).location(false, "a.test", "/x", None, "/"),
            "http://a.test/x"
        );
        let moved = Redirect {
            hostname: Some("b.test".into()),
            path: Some(PathRewrite::Prefix("/new".into())),
            listener_port: 8443,
            ..redirect(None, None)
        };
        assert_eq!(
            moved.location(true, "a.test", "/old/page", None, "/old"),
            "https://b.test:8443/new/page"
        );
    }

    #[test]
    fn header_edits_set_add_and_remove() {
        let mut headers = HeaderMap::new();
        headers.append("x-one", "a".parse().unwrap());
        headers.append("x-one", "b".parse().unwrap());
        headers.append("x-gone", "c".parse().unwrap());
        let edits = HeaderEdits {
            set: vec![(
                HeaderName::from_static("x-one"),
                HeaderValue::from_static("set"),
            )],
            add: vec![(
                HeaderName::from_static("x-two"),
                HeaderValue::from_static("added"),
            )],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        edits.apply(&mut headers);
        assert_eq!(headers.get_all("x-one").iter().collect::<Vec<_>>(), ["set"]);
        assert_eq!(headers["x-two"], "added");
        assert!(!headers.contains_key("x-gone"));
    }
}
