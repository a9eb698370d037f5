//! What a route matches beyond host and path prefix (the Gateway API's exact paths, methods,
//! headers and query parameters), and the order in which a host's routes are tried.

use http::HeaderMap;
use http::header::HeaderName;

use super::path::has_prefix;

/// The parts of a request that routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The normalised path.
    pub path: &'a str,
    pub method: &'a str,
    /// `None` when the caller has no headers (then no header condition holds).
    pub headers: Option<&'a HeaderMap>,
    /// The raw query, without `?`.
    pub query: &'a str,
    /// Whether the request came over TLS (directly or through a trusted proxy).
    pub tls: bool,
}

impl<'a> RequestView<'a> {
    /// A `GET` of `path` over TLS without headers or query, for callers that know only the path.
    pub fn path_only(path: &'a str) -> Self {
        RequestView {
            path,
            method: "GET",
            headers: None,
            query: "",
            tls: true,
        }
    }
}

/// Conditions of a Gateway API route match; every one given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchConditions {
    /// The path must equal the route's path, not merely start with it.
    pub exact_path: bool,
    /// Only requests that came over TLS match (a route of an HTTPS listener).
    pub tls_only: bool,
    /// Upper-case method.
    pub method: Option<String>,
    /// Header names with the exact value one of their values must have.
    pub headers: Vec<(HeaderName, String)>,
    /// Query parameter names (case-sensitive) with the exact value their first value must have.
    pub query: Vec<(String, String)>,
    /// A GRPCRoute's method match without a service: the path must be `/{any service}/{this}`.
    pub grpc_method: Option<String>,
}

impl MatchConditions {
    pub fn holds(&self, prefix: &str, request: &RequestView<'_>) -> bool {
        let path_ok = if self.exact_path {
            request.path == prefix
        } else {
            has_prefix(request.path, prefix)
        };
        path_ok
            && self
                .grpc_method
                .as_deref()
                .is_none_or(|method| is_grpc_call_of(request.path, method))
            && (request.tls || !self.tls_only)
            && self
                .method
                .as_deref()
                .is_none_or(|method| method == request.method)
            && self.headers.iter().all(|(name, value)| {
                request.headers.is_some_and(|headers| {
                    headers
                        .get_all(name)
                        .iter()
                        .any(|present| present.as_bytes() == value.as_bytes())
                })
            })
            && self.query.iter().all(|(name, value)| {
                url::form_urlencoded::parse(request.query.as_bytes())
                    .find(|(present, _)| present == name)
                    .is_some_and(|(_, present)| present == value.as_str())
            })
    }
}

/// Whether `path` is a gRPC call (`/package.Service/Method`) of a method named `method`.
fn is_grpc_call_of(path: &str, method: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, called)| !service.is_empty() && called == method)
}

/// Where a route stands among a host's routes: the Gateway API's precedence (exact path, then
/// the longest path, then a gRPC method named without its service, then an HTTP method, then
/// the most header and then query matches), then `rank` (the order of the routes themselves:
/// oldest first, then by name, then rule by rule). A GRPCRoute's matches are paths too
/// (`/service/method` exact, `/service` as a prefix), so its order — service characters, then
/// method characters, then headers — falls out of the same comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    exact: std::cmp::Reverse<bool>,
    path_length: std::cmp::Reverse<usize>,
    grpc_method_length: std::cmp::Reverse<usize>,
    method: std::cmp::Reverse<bool>,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    rank: u64,
}

impl Precedence {
    pub fn of(prefix: &str, conditions: Option<&MatchConditions>, rank: u64) -> Self {
        let none = MatchConditions::default();
        let conditions = conditions.unwrap_or(&none);
        Precedence {
            exact: std::cmp::Reverse(conditions.exact_path),
            path_length: std::cmp::Reverse(prefix.trim_end_matches('/').len()),
            grpc_method_length: std::cmp::Reverse(
                conditions.grpc_method.as_ref().map_or(0, String::len),
            ),
            method: std::cmp::Reverse(conditions.method.is_some()),
            headers: std::cmp::Reverse(conditions.headers.len()),
            query: std::cmp::Reverse(conditions.query.len()),
            rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, headers: &'a HeaderMap, query: &'a str) -> RequestView<'a> {
        RequestView {
            path,
            method: "GET",
            headers: Some(headers),
            query,
            tls: false,
        }
    }

    #[test]
    fn each_condition_must_hold() {
        let mut headers = HeaderMap::new();
        headers.append("version", "one".parse().unwrap());
        headers.append("version", "two".parse().unwrap());
        let conditions = MatchConditions {
            exact_path: true,
            tls_only: false,
            method: Some("GET".into()),
            headers: vec![(HeaderName::from_static("version"), "two".into())],
            query: vec![("animal".into(), "whale cat".into())],
            grpc_method: None,
        };
        let request = view("/exact", &headers, "animal=whale%20cat&animal=dolphin");
        assert!(conditions.holds("/exact", &request));
        assert!(!conditions.holds(
            "/exact",
            &RequestView {
                path: "/exact/more",
                ..request
            }
        ));
        assert!(!conditions.holds(
            "/exact",
            &RequestView {
                method: "POST",
                ..request
            }
        ));
        assert!(!conditions.holds(
            "/exact",
            &RequestView {
                query: "animal=dolphin&animal=whale%20cat",
                ..request
            }
        ));
        assert!(!conditions.holds(
            "/exact",
            &RequestView {
                query: "Animal=whale%20cat",
                ..request
            }
        ));
        assert!(!conditions.holds(
            "/exact",
            &RequestView {
                headers: None,
                ..request
            }
        ));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let headers = HeaderMap::new();
        let prefix = MatchConditions::default();
        assert!(prefix.holds("/v2", &view("/v2/users", &headers, "")));
        assert!(prefix.holds("/v2/", &view("/v2", &headers, "")));
        assert!(!prefix.holds("/v2", &view("/v2example", &headers, "")));
    }

    #[test]
    fn precedence_orders_exact_then_length_then_method_headers_query_then_rank() {
        let exact = MatchConditions {
            exact_path: true,
            ..Default::default()
        };
        let method = MatchConditions {
            method: Some("GET".into()),
            ..Default::default()
        };
        let header = MatchConditions {
            headers: vec![(HeaderName::from_static("a"), "b".into())],
            ..Default::default()
        };
        let query = MatchConditions {
            query: vec![("a".into(), "b".into())],
            ..Default::default()
        };
        let mut order = [
            ("prefix /, rank 2", Precedence::of("/", None, 2)),
            ("query", Precedence::of("/", Some(&query), 9)),
            ("prefix /, rank 1", Precedence::of("/", None, 1)),
            ("header", Precedence::of("/", Some(&header), 9)),
            ("method", Precedence::of("/", Some(&method), 9)),
            ("long prefix", Precedence::of("/a/b", None, 9)),
            ("exact", Precedence::of("/", Some(&exact), 9)),
        ];
        order.sort_by_key(|(_, precedence)| *precedence);
        let names: Vec<_> = order.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "exact",
                "long prefix",
                "method",
                "header",
                "query",
                "prefix /, rank 1",
                "prefix /, rank 2"
            ]
        );
    }

    #[test]
    fn a_grpc_method_without_service_matches_that_method_of_any_service() {
        let headers = HeaderMap::new();
        let method_only = MatchConditions {
            grpc_method: Some("Say".into()),
            ..Default::default()
        };
        assert!(method_only.holds("/", &view("/kube_iap.test.Echo/Say", &headers, "")));
        assert!(method_only.holds("/", &view("/other.Svc/Say", &headers, "")));
        assert!(!method_only.holds("/", &view("/kube_iap.test.Echo/SayMore", &headers, "")));
        assert!(!method_only.holds("/", &view("/Say", &headers, "")));
        assert!(!method_only.holds("//Say", &view("//Say", &headers, "")));
        assert!(!method_only.holds("/", &view("/a/b/Say", &headers, "")));
    }

    #[test]
    fn grpc_precedence_is_service_then_method_then_headers() {
        let method_only = MatchConditions {
            grpc_method: Some("Say".into()),
            ..Default::default()
        };
        let exact = MatchConditions {
            exact_path: true,
            ..Default::default()
        };
        let header = MatchConditions {
            headers: vec![(HeaderName::from_static("a"), "b".into())],
            ..Default::default()
        };
        let mut order = [
            ("every call", Precedence::of("/", None, 1)),
            ("method only", Precedence::of("/", Some(&method_only), 9)),
            (
                "service with header",
                Precedence::of("/a.Echo", Some(&header), 9),
            ),
            ("service", Precedence::of("/a.Echo", None, 2)),
            (
                "service and method",
                Precedence::of("/a.Echo/Say", Some(&exact), 9),
            ),
        ];
        order.sort_by_key(|(_, precedence)| *precedence);
        let names: Vec<_> = order.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "service and method",
                "service with header",
                "service",
                "method only",
                "every call"
            ]
        );
    }
}
