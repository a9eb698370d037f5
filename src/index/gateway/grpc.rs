//! GRPCRoute rules as table entries. A gRPC call is an HTTP/2 POST of
//! `/package.Service/Method`, so a method match becomes a path: service and method an exact
//! path, a service alone a path prefix, a method alone a condition on the path's last segment.
//! Precedence then orders them as the spec does (service characters, then method characters,
//! then headers). Backends are reached over cleartext HTTP/2 (h2c).

use super::routes::{self, RouteKind, Rule, RuleParts};
use crate::api::gateway::{GRPCRoute, GrpcRouteMatch, HttpRouteFilter};
use crate::index::backends::SlicesByService;
use crate::index::{Index, ObjectKey};
use crate::model::MatchConditions;

/// Every rule of a GRPCRoute, translated.
pub fn translate_rules(index: &Index, key: &ObjectKey, route: &GRPCRoute) -> Vec<Rule> {
    let slices = SlicesByService::new(index);
    let rules = route
        .spec
        .rules
        .iter()
        .map(|rule| {
            let mut matches: Vec<_> = rule.matches.iter().map(translate_match).collect();
            if matches.is_empty() {
                // No match given: every call.
                matches.push(Ok(("/".to_string(), MatchConditions::default())));
            }
            let refused = rule
                .filters
                .iter()
                .find(|f| !shared_with_http(f))
                .map(|filter| format!("filter {} is not valid on a GRPCRoute", filter.type_));
            let parts = RuleParts {
                kind: RouteKind::Grpc,
                name: rule.name.clone(),
                matches,
                refused,
                filters: &rule.filters,
                backend_refs: &rule.backend_refs,
            };
            routes::translate_rule(index, &slices, key, parts)
        })
        .collect();
    routes::fail_closed_if_unmatchable(rules)
}

/// The filter types GRPCRoute has (the others are HTTPRoute's alone).
fn shared_with_http(filter: &HttpRouteFilter) -> bool {
    matches!(
        filter.type_.as_str(),
        "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror" | "ExtensionRef"
    )
}

fn translate_match(found: &GrpcRouteMatch) -> Result<(String, MatchConditions), String> {
    let mut conditions = MatchConditions::default();
    let mut path = "/".to_string();
    if let Some(method) = &found.method {
        match method.type_.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            other => return Err(format!("method match type {other} is not served")),
        }
        let service = method.service.as_deref().filter(|s| !s.is_empty());
        let name = method.method.as_deref().filter(|m| !m.is_empty());
        if let Some(service) = service.filter(|s| !is_service_name(s)) {
            return Err(format!("service {service:?} is not a gRPC service name"));
        }
        if let Some(name) = name.filter(|m| !is_method_name(m)) {
            return Err(format!("method {name:?} is not a gRPC method name"));
        }
        match (service, name) {
            (Some(service), Some(name)) => {
                path = format!("/{}/{name}", service.trim_start_matches('.'));
                conditions.exact_path = true;
            }
            (Some(service), None) => path = format!("/{}", service.trim_start_matches('.')),
            (None, Some(name)) => conditions.grpc_method = Some(name.to_string()),
            (None, None) => {
                return Err("a method match names neither a service nor a method".to_string());
            }
        }
    }
    routes::add_header_matches(&mut conditions, &found.headers)?;
    Ok((path, conditions))
}

/// `package.Service`, as the GRPCRoute schema allows it: dotted identifiers, an optional
/// leading dot.
fn is_service_name(service: &str) -> bool {
    let service = service.strip_prefix('.').unwrap_or(service);
    service.split('.').all(is_identifier)
}

fn is_method_name(method: &str) -> bool {
    is_identifier(method)
}

fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
