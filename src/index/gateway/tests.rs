//! Gateway API objects in, table entries and statuses out, each world written as the YAML a
//! user would apply and read with the manifests parser.

use std::path::PathBuf;

use serde_json::Value;

use crate::index::{ComputedStatus, Index, Kind, Snapshot};
use crate::model::{RequestView, RouteAction};

const BASE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: oidc, namespace: apps}
stringData: {secret: s3cret}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp, namespace: apps}
spec: {issuer: "https://idp.example.com", clientId: web, clientSecretRef: {name: oidc, key: secret}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: iap}
spec: {controllerName: kube-iap.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: apps}
spec:
  gatewayClassName: iap
  listeners:
  - {name: http, protocol: HTTP, port: 80, hostname: "*.example.com"}
  - {name: shared, protocol: HTTP, port: 80, hostname: "shared.test", allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: one, namespace: apps}
spec: {type: ExternalName, externalName: one.internal, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: two, namespace: apps}
spec: {type: ExternalName, externalName: two.internal, ports: [{port: 8080}]}
"#;

pub(super) fn snapshot(extra: &str) -> Snapshot {
    let text = format!("{BASE}\n---\n{extra}");
    let manifests = crate::source::files::parse(&[(PathBuf::from("test.yaml"), text)]);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let mut index = Index::default();
    let mut resources = manifests.resources;
    crate::source::files::FirstSeen::default().stamp(
        &mut resources,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ),
    );
    for resource in resources {
        index.apply(resource);
    }
    index.build()
}

pub(super) fn policy(name: &str, targets: &str) -> String {
    format!(
        r#"
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: {name}, namespace: apps}}
spec:
  oauthClientRef: {{name: idp}}
  access: [{{members: [allAuthenticatedUsers]}}]
  targetRefs: {targets}
"#
    )
}

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{spec}"
    )
}

pub(super) fn status<'a>(snapshot: &'a Snapshot, kind: Kind, name: &str) -> &'a ComputedStatus {
    snapshot
        .statuses
        .iter()
        .find(|status| status.kind == kind && status.key.name == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}"))
}

pub(super) fn api_status(snapshot: &Snapshot, kind: Kind, name: &str) -> Value {
    let status = status(snapshot, kind, name);
    serde_json::from_str(
        status
            .api_status
            .as_deref()
            .expect("has a Gateway API status"),
    )
    .unwrap()
}

/// `type=reason` of every condition of the route's first parent.
fn parent_conditions(snapshot: &Snapshot, name: &str) -> Vec<String> {
    kind_parent_conditions(snapshot, Kind::HttpRoute, name)
}

/// The same for a route of any kind.
pub(super) fn kind_parent_conditions(snapshot: &Snapshot, kind: Kind, name: &str) -> Vec<String> {
    let status = api_status(snapshot, kind, name);
    status["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}:{}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect()
}

/// What a request gets: `forward <upstream>`, `refused`, `fails <reason>`, or `none`.
pub(super) fn outcome(snapshot: &Snapshot, host: &str, request: RequestView<'_>) -> String {
    match snapshot.table.route_for(host, &request) {
        None => "none".to_string(),
        Some(route) => match &route.action {
            RouteAction::Forward(backend) => format!(
                "forward {} by {}",
                backend.upstreams[0].authority, route.policy
            ),
            RouteAction::Unprotected { .. } => "refused".to_string(),
            RouteAction::FailClosed { reason, .. } => format!("fails {reason}"),
            RouteAction::Redirect(redirect) => format!("redirect {}", redirect.status),
        },
    }
}

pub(super) fn get(path: &str) -> RequestView<'_> {
    RequestView::path_only(path)
}

#[test]
fn only_classes_of_kube_iaps_controller_are_accepted_and_reported() {
    let snapshot = snapshot("");
    let class = api_status(&snapshot, Kind::GatewayClass, "iap");
    assert_eq!(class["conditions"][0]["type"], "Accepted");
    assert_eq!(class["conditions"][0]["status"], "True");
    assert!(
        !snapshot
            .statuses
            .iter()
            .any(|s| s.key.name == "someone-else"),
        "another controller's class is left alone"
    );
}

#[test]
fn accepted_classes_list_their_supported_features_in_order() {
    let snapshot = snapshot("");
    let class = api_status(&snapshot, Kind::GatewayClass, "iap");
    let names: Vec<&str> = class["supportedFeatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| feature["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "the spec wants them sorted by name");
    for core in ["Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"] {
        assert!(names.contains(&core), "{core}");
    }
}

#[test]
fn a_route_no_policy_covers_is_refused_and_its_status_says_so() {
    let snapshot = snapshot(&route(
        "open",
        "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
    ));
    assert_eq!(outcome(&snapshot, "app.example.com", get("/")), "refused");
    assert!(
        parent_conditions(&snapshot, "open")
            .contains(&"kube-iap.io/Protected=False:NoPolicy".to_string())
    );
    assert!(!status(&snapshot, Kind::HttpRoute, "open").ready);
}

#[test]
fn the_most_specific_policy_attachment_wins() {
    let world = [
        policy("gateway-wide", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        policy("whole-route", "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]"),
        policy("admin-rule", "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app, sectionName: admin}]"),
        route(
            "app",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - {matches: [{path: {value: /}}], backendRefs: [{name: one, port: 8080}]}\n  - {name: admin, matches: [{path: {value: /admin}}], backendRefs: [{name: two, port: 8080}]}",
        ),
        route(
            "other",
            "  parentRefs: [{name: web}]\n  hostnames: [other.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    assert_eq!(
        outcome(&snapshot, "app.example.com", get("/x")),
        "forward one.internal:8080 by apps/whole-route"
    );
    assert_eq!(
        outcome(&snapshot, "app.example.com", get("/admin/x")),
        "forward two.internal:8080 by apps/admin-rule"
    );
    assert_eq!(
        outcome(&snapshot, "other.example.com", get("/")),
        "forward one.internal:8080 by apps/gateway-wide"
    );
    let ancestors = &api_status(&snapshot, Kind::IapPolicy, "admin-rule")["ancestors"];
    assert_eq!(ancestors[0]["ancestorRef"]["sectionName"], "admin");
    assert_eq!(ancestors[0]["conditions"][0]["reason"], "Accepted");
    assert!(
        parent_conditions(&snapshot, "app")
            .contains(&"kube-iap.io/Protected=True:Protected".to_string())
    );
}

#[test]
fn a_policy_named_by_an_extension_ref_filter_protects_its_rule() {
    let world = [
        policy("by-filter", "[]"),
        route(
            "app",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - filters: [{type: ExtensionRef, extensionRef: {group: kube-iap.io, kind: IapPolicy, name: by-filter}}]\n    backendRefs: [{name: one, port: 8080}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    assert_eq!(
        outcome(&snapshot, "app.example.com", get("/")),
        "forward one.internal:8080 by apps/by-filter"
    );
}

#[test]
fn policy_ancestors_say_accepted_conflicted_or_target_not_found() {
    let world = [
        policy("first", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        policy("second", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}, {group: gateway.networking.k8s.io, kind: Gateway, name: missing}, {group: gateway.networking.k8s.io, kind: Gateway, name: web, sectionName: nope}]"),
    ]
    .join("\n---\n")
    // Creation times come from first sight; names break the tie, so "first" is older.
    ;
    let snapshot = snapshot(&world);
    let reasons = |name: &str| -> Vec<String> {
        api_status(&snapshot, Kind::IapPolicy, name)["ancestors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["conditions"][0]["reason"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(reasons("first"), ["Accepted"]);
    assert_eq!(
        reasons("second"),
        ["Conflicted", "TargetNotFound", "TargetNotFound"]
    );
}

#[test]
fn a_policy_whose_gateway_is_not_kube_iaps_says_target_not_found() {
    let world = [
        policy("lost", "[{group: gateway.networking.k8s.io, kind: Gateway, name: theirs}]"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: theirs, namespace: apps}\nspec: {gatewayClassName: someone-else, listeners: [{name: http, protocol: HTTP, port: 80}]}".to_string(),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let ancestors = &api_status(&snapshot, Kind::IapPolicy, "lost")["ancestors"];
    assert_eq!(ancestors[0]["conditions"][0]["reason"], "TargetNotFound");
    assert!(
        !snapshot
            .statuses
            .iter()
            .any(|s| s.kind == Kind::Gateway && s.key.name == "theirs"),
        "another controller's Gateway gets no status from kube-iap"
    );
}

#[test]
fn rules_are_ordered_as_the_spec_says_across_routes() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "a-prefix",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - {matches: [{path: {type: PathPrefix, value: /v1}}], backendRefs: [{name: one, port: 8080}]}",
        ),
        route(
            "b-exact-and-headers",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - {matches: [{path: {type: Exact, value: /v1}}], backendRefs: [{name: two, port: 8080}]}\n  - {matches: [{path: {value: /v1}, headers: [{name: Version, value: two}]}], backendRefs: [{name: two, port: 8080}]}\n  - {matches: [{path: {value: /v1}, queryParams: [{name: q, value: two}], method: POST}], backendRefs: [{name: two, port: 8080}]}",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let mut headers = http::HeaderMap::new();
    headers.insert("version", "two".parse().unwrap());
    let with = |path, method, query, headers| RequestView {
        path,
        method,
        headers,
        query,
        tls: false,
    };
    let none = http::HeaderMap::new();
    let cases = [
        (with("/v1", "GET", "", Some(&none)), "two"),
        (with("/v1/x", "GET", "", Some(&none)), "one"),
        (with("/v1/x", "GET", "", Some(&headers)), "two"),
        (with("/v1/x", "POST", "q=two", Some(&none)), "two"),
        (with("/v1/x", "GET", "q=two", Some(&none)), "one"),
    ];
    for (request, want) in cases {
        let got = outcome(&snapshot, "app.example.com", request);
        assert!(
            got.starts_with(&format!("forward {want}.internal")),
            "{request:?}: {got}"
        );
    }
}

#[test]
fn hostnames_are_intersected_with_the_listeners() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "mixed",
            "  parentRefs: [{name: web, sectionName: http}]\n  hostnames: [a.example.com, other.test, \"*.deep.example.com\"]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
        route(
            "elsewhere",
            "  parentRefs: [{name: web, sectionName: http}]\n  hostnames: [nothing.test]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
        route(
            "all-of-listener",
            "  parentRefs: [{name: web, sectionName: http}]\n  rules: [{matches: [{path: {value: /wide}}], backendRefs: [{name: two, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    assert!(outcome(&snapshot, "a.example.com", get("/")).starts_with("forward one"));
    assert!(outcome(&snapshot, "x.deep.example.com", get("/")).starts_with("forward one"));
    assert_eq!(outcome(&snapshot, "other.test", get("/")), "none");
    assert!(outcome(&snapshot, "b.example.com", get("/wide")).starts_with("forward two"));
    assert!(
        parent_conditions(&snapshot, "elsewhere")
            .contains(&"Accepted=False:NoMatchingListenerHostname".to_string())
    );
    let gateway = api_status(&snapshot, Kind::Gateway, "web");
    assert_eq!(gateway["listeners"][0]["attachedRoutes"], 2);
}

#[test]
fn listeners_admit_routes_only_from_the_namespaces_they_allow() {
    let foreign = |name: &str, section: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  parentRefs: [{{name: web, namespace: apps, sectionName: {section}}}]\n  rules: [{{backendRefs: [{{name: one, port: 8080}}]}}]"
        )
    };
    let world = [foreign("same-only", "http"), foreign("from-all", "shared")].join("\n---\n");
    let snapshot = snapshot(&world);
    assert!(
        parent_conditions(&snapshot, "same-only")
            .contains(&"Accepted=False:NotAllowedByListeners".to_string())
    );
    assert!(
        parent_conditions(&snapshot, "from-all").contains(&"Accepted=True:Accepted".to_string())
    );
}

#[test]
fn a_listener_admits_routes_from_the_namespaces_its_selector_selects() {
    let world = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {gateway-access: granted}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: selective, namespace: apps}
spec:
  gatewayClassName: iap
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    hostname: selective.test
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-access: granted}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: granted, namespace: team}
spec: {parentRefs: [{name: selective, namespace: apps}], rules: [{backendRefs: [{name: one, port: 8080}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unlabelled, namespace: elsewhere}
spec: {parentRefs: [{name: selective, namespace: apps}], rules: [{backendRefs: [{name: one, port: 8080}]}]}
"#;
    let snapshot = snapshot(world);
    let accepted = |name: &str| {
        let status = snapshot
            .statuses
            .iter()
            .find(|s| s.kind == Kind::HttpRoute && s.key.name == name)
            .unwrap();
        let value: Value = serde_json::from_str(status.api_status.as_deref().unwrap()).unwrap();
        value["parents"][0]["conditions"][0]["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(accepted("granted"), "Accepted");
    assert_eq!(accepted("unlabelled"), "NotAllowedByListeners");
}

#[test]
fn listeners_kube_iap_cannot_serve_say_why() {
    let world = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: odd, namespace: apps}
spec:
  gatewayClassName: iap
  listeners:
  - {name: tcp, protocol: TCP, port: 80}
  - {name: elsewhere, protocol: HTTP, port: 8081}
  - {name: a, protocol: HTTP, port: 80, hostname: dup.test}
  - {name: b, protocol: HTTP, port: 80, hostname: dup.test}
  - {name: tls, protocol: HTTPS, port: 443, hostname: secure.test, tls: {certificateRefs: [{name: missing}]}}
  - {name: kinds, protocol: HTTP, port: 80, hostname: k.test, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
"#;
    let snapshot = snapshot(world);
    let gateway = api_status(&snapshot, Kind::Gateway, "odd");
    let reasons: Vec<String> = gateway["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|listener| {
            let problem = listener["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| (c["status"] == "True") == (c["type"] == "Conflicted"))
                .map(|c| c["reason"].as_str().unwrap().to_string());
            format!(
                "{}:{}",
                listener["name"].as_str().unwrap(),
                problem.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "tcp:UnsupportedProtocol",
            "elsewhere:PortUnavailable",
            "a:Invalid",
            "b:Invalid",
            "tls:Invalid",
            "kinds:Invalid",
        ]
    );
    let conditions = |name: &str| -> Vec<String> {
        let listener = gateway["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap();
        listener["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["type"].as_str().unwrap(),
                    c["reason"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(conditions("a").contains(&"Conflicted=HostnameConflict".to_string()));
    assert!(conditions("tls").contains(&"ResolvedRefs=InvalidCertificateRef".to_string()));
    assert!(conditions("kinds").contains(&"ResolvedRefs=InvalidRouteKinds".to_string()));
    assert_eq!(
        gateway["conditions"][1]["reason"], "Invalid",
        "no listener is served"
    );
}

#[test]
fn unresolvable_backends_answer_500_and_the_other_rules_keep_working() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "partly",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - {matches: [{path: {value: /missing}}], backendRefs: [{name: nope, port: 8080}]}\n  - {matches: [{path: {value: /foreign}}], backendRefs: [{name: one, namespace: other, port: 8080}]}\n  - {matches: [{path: {value: /kind}}], backendRefs: [{kind: ConfigMap, group: \"\", name: one}]}\n  - {matches: [{path: {value: /filter}}], filters: [{type: RequestMirror}], backendRefs: [{name: one, port: 8080}]}\n  - {matches: [{path: {value: /}}], backendRefs: [{name: one, port: 8080}]}",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    assert!(outcome(&snapshot, "app.example.com", get("/missing")).starts_with("fails"));
    assert!(outcome(&snapshot, "app.example.com", get("/foreign")).starts_with("fails"));
    assert!(outcome(&snapshot, "app.example.com", get("/kind")).starts_with("fails"));
    assert!(outcome(&snapshot, "app.example.com", get("/filter")).contains("RequestMirror"));
    assert!(outcome(&snapshot, "app.example.com", get("/ok")).starts_with("forward one"));
    let conditions = parent_conditions(&snapshot, "partly");
    assert!(
        conditions.contains(&"ResolvedRefs=False:BackendNotFound".to_string()),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&"PartiallyInvalid=True:UnsupportedValue".to_string()),
        "{conditions:?}"
    );
}

#[test]
fn a_cross_namespace_backend_is_refused_with_ref_not_permitted() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "foreign",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: one, namespace: other, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    assert!(
        parent_conditions(&snapshot, "foreign")
            .contains(&"ResolvedRefs=False:RefNotPermitted".to_string())
    );
}

#[test]
fn filters_that_could_forge_identity_or_contradict_the_match_make_the_rule_invalid() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "bad",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - matches: [{path: {value: /forge}}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Kube-Iap-Authenticated-User-Email, value: boss@example.com}]}}]\n    backendRefs: [{name: one, port: 8080}]\n  - matches: [{path: {type: Exact, value: /exact}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]\n    backendRefs: [{name: one, port: 8080}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let forged = outcome(&snapshot, "app.example.com", get("/forge"));
    assert!(
        forged.contains("identity headers are kube-iap's"),
        "{forged}"
    );
    let exact = outcome(&snapshot, "app.example.com", get("/exact"));
    assert!(exact.contains("needs PathPrefix"), "{exact}");
    assert!(
        parent_conditions(&snapshot, "bad")
            .contains(&"PartiallyInvalid=True:UnsupportedValue".to_string())
    );
}

#[test]
fn a_reference_grant_lets_a_route_reach_a_service_of_another_namespace() {
    let foreign_service = "apiVersion: v1\nkind: Service\nmetadata: {name: shared, namespace: other}\nspec: {type: ExternalName, externalName: shared.internal, ports: [{port: 8080}]}";
    let grant = |to_name: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: routes-in, namespace: other}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}}]\n  to: [{{group: \"\", kind: Service, name: {to_name}}}]"
        )
    };
    let world = |grant: &str| {
        [
            policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
            foreign_service.to_string(),
            grant.to_string(),
            route(
                "cross",
                "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: shared, namespace: other, port: 8080}]}]",
            ),
        ]
        .join("\n---\n")
    };
    let granted = snapshot(&world(&grant("shared")));
    assert_eq!(
        outcome(&granted, "app.example.com", get("/")),
        "forward shared.internal:8080 by apps/p"
    );
    assert!(
        parent_conditions(&granted, "cross")
            .contains(&"ResolvedRefs=True:ResolvedRefs".to_string())
    );
    let other_name = snapshot(&world(&grant("someone-else")));
    assert!(outcome(&other_name, "app.example.com", get("/")).starts_with("fails"));
    assert!(
        parent_conditions(&other_name, "cross")
            .contains(&"ResolvedRefs=False:RefNotPermitted".to_string())
    );
}

/// Statuses are compared as the text of the object's status read back from the API server
/// (a `serde_json::Value`, keys in order): the route status written straight from structs must
/// read exactly the same, or every build would look like a change to write.
#[test]
fn a_route_status_reads_back_as_the_same_text() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "app",
            "  parentRefs: [{name: web, sectionName: http, port: 80}, {name: web, namespace: apps}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: nope, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let text = status(&snapshot, Kind::HttpRoute, "app")
        .api_status
        .as_deref()
        .unwrap()
        .to_string();
    let read_back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(read_back.to_string(), text);
    assert_eq!(read_back["parents"][0]["parentRef"]["sectionName"], "http");
}

/// A route's rules are reused between builds only while what they read is unchanged: a
/// Service it names, and a ReferenceGrant, each take effect on the next build.
#[test]
fn reused_rules_follow_the_services_and_grants_they_read() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
        route(
            "app",
            "  parentRefs: [{name: web}]\n  hostnames: [app.example.com, cross.example.com]\n  rules:\n  - {matches: [{path: {value: /}}], backendRefs: [{name: one, port: 8080}]}\n  - {matches: [{path: {value: /cross}}], backendRefs: [{name: far, namespace: other, port: 8080}]}",
        ),
        "apiVersion: v1\nkind: Service\nmetadata: {name: far, namespace: other}\nspec: {type: ExternalName, externalName: far.internal, ports: [{port: 8080}]}".to_string(),
    ]
    .join("\n---\n");
    let text = format!("{BASE}\n---\n{world}");
    let manifests = crate::source::files::parse(&[(PathBuf::from("t.yaml"), text)]);
    let mut index = Index::default();
    for resource in manifests.resources {
        index.apply(resource);
    }
    let first = index.build();
    assert_eq!(
        outcome(&first, "app.example.com", get("/")),
        "forward one.internal:8080 by apps/p"
    );
    assert!(outcome(&first, "app.example.com", get("/cross")).starts_with("fails"));

    let changed = "apiVersion: v1\nkind: Service\nmetadata: {name: one, namespace: apps}\nspec: {type: ExternalName, externalName: moved.internal, ports: [{port: 8080}]}\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}], to: [{group: \"\", kind: Service}]}";
    for resource in
        crate::source::files::parse(&[(PathBuf::from("c.yaml"), changed.to_string())]).resources
    {
        index.apply(resource);
    }
    let second = index.build();
    assert_eq!(
        outcome(&second, "app.example.com", get("/")),
        "forward moved.internal:8080 by apps/p"
    );
    assert_eq!(
        outcome(&second, "app.example.com", get("/cross")),
        "forward far.internal:8080 by apps/p"
    );
}

#[test]
fn reused_attachments_follow_the_policies_and_gateways_they_read() {
    let index_of = |text: String| {
        let mut index = Index::default();
        apply_text(&mut index, &format!("{BASE}\n---\n{text}"));
        index
    };
    let mut index = index_of(
        [
            policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"),
            route(
                "app",
                "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
            ),
            route(
                "other",
                "  parentRefs: [{name: web}]\n  hostnames: [other.example.com]\n  rules: [{backendRefs: [{name: two, port: 8080}]}]",
            ),
        ]
        .join("\n---\n"),
    );
    let first = index.build();
    assert_eq!(
        outcome(&first, "app.example.com", get("/")),
        "forward one.internal:8080 by apps/p"
    );
    let attached = |snapshot: &Snapshot| {
        api_status(snapshot, Kind::Gateway, "web")["listeners"][0]["attachedRoutes"].clone()
    };
    assert_eq!(attached(&first), 2);

    // Another route changes: the rest are reused, and still counted.
    apply_text(
        &mut index,
        &route(
            "other",
            "  parentRefs: [{name: web}]\n  hostnames: [moved.example.com]\n  rules: [{backendRefs: [{name: two, port: 8080}]}]",
        ),
    );
    let second = index.build();
    assert_eq!(
        outcome(&second, "app.example.com", get("/")),
        "forward one.internal:8080 by apps/p"
    );
    assert_eq!(outcome(&second, "other.example.com", get("/")), "none");
    assert_eq!(attached(&second), 2);

    // The policy lets go of the Gateway: every route is attached again, and refused.
    apply_text(&mut index, &policy("p", "[]"));
    let third = index.build();
    assert_eq!(outcome(&third, "app.example.com", get("/")), "refused");

    // The listener narrows to another hostname: the route no longer attaches there.
    apply_text(
        &mut index,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: apps}\nspec:\n  gatewayClassName: iap\n  listeners:\n  - {name: http, protocol: HTTP, port: 80, hostname: \"*.elsewhere.test\"}",
    );
    let fourth = index.build();
    assert_eq!(outcome(&fourth, "app.example.com", get("/")), "none");
    assert_eq!(attached(&fourth), 0);
}

#[test]
fn reused_table_routes_follow_their_policys_compilation() {
    let mut index = Index::default();
    apply_text(
        &mut index,
        &format!(
            "{BASE}\n---\n{}\n---\n{}",
            policy(
                "p",
                "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]"
            ),
            route(
                "app",
                "  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
            )
        ),
    );
    let client_id = |snapshot: &Snapshot| {
        let route = snapshot
            .table
            .route_for("app.example.com", &get("/"))
            .unwrap();
        route.sign_in.as_ref().unwrap().client.client_id.clone()
    };
    assert_eq!(client_id(&index.build()), "web");
    // Only the OAuthClient changes: the route attaches as before, but its policy compiles
    // anew, and the table route must carry the new client.
    apply_text(
        &mut index,
        "apiVersion: kube-iap.io/v1alpha1\nkind: OAuthClient\nmetadata: {name: idp, namespace: apps}\nspec: {issuer: \"https://idp.example.com\", clientId: renamed, clientSecretRef: {name: oidc, key: secret}}",
    );
    assert_eq!(client_id(&index.build()), "renamed");
}

fn apply_text(index: &mut Index, text: &str) {
    let manifests = crate::source::files::parse(&[(PathBuf::from("t.yaml"), text.to_string())]);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    for resource in manifests.resources {
        index.apply(resource);
    }
}

/// A status written and then read back from the object is current: the writer leaves it alone
/// instead of writing the same status again and again.
#[test]
fn every_status_written_reads_back_as_current() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}, {group: gateway.networking.k8s.io, kind: Gateway, name: missing}]"),
        route(
            "app",
            "  parentRefs: [{name: web, sectionName: http}]\n  hostnames: [app.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: rpc, namespace: apps}\nspec:\n  parentRefs: [{name: web, sectionName: http}]\n  hostnames: [rpc.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]".to_string(),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    );
    let mut checked = Vec::new();
    for status in &snapshot.statuses {
        let written = status.subresource(now.clone());
        let mut read_back = status.clone();
        read_back.current = Some(Box::new(match status.kind {
            Kind::IapPolicy => crate::index::CurrentStatus::of_policy(
                &serde_json::from_value(written.clone()).unwrap(),
            ),
            Kind::OAuthClient => continue,
            kind => crate::index::CurrentStatus::of_gateway_api(kind, &written),
        }));
        assert!(
            read_back.is_current(),
            "{:?} {}: {:?} read back as {:?}",
            status.kind,
            status.key,
            status.api_status,
            read_back
                .current
                .as_ref()
                .and_then(|c| c.api_status.clone())
        );
        // Written again later, unchanged: every condition keeps the time it first had.
        let later = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_900_000_000).unwrap(),
        );
        // A route's times come from the route as the writer reads it just before writing.
        let again = match status.kind {
            Kind::HttpRoute | Kind::GrpcRoute => read_back
                .api_status_body_against(&later, Some(&written))
                .unwrap()
                .to_string(),
            _ => read_back.subresource(later).to_string(),
        };
        assert!(!again.contains("2030-"), "{again}");
        assert!(again.contains("2027-01-15T08:00:00Z"), "{again}");
        checked.push(status.kind);
    }
    for kind in [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::IapPolicy,
    ] {
        assert!(checked.contains(&kind), "{kind:?} checked");
    }
}

#[test]
fn a_gateway_asking_for_addresses_of_its_own_is_not_served() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: pinned}]"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: pinned, namespace: apps}\nspec: {gatewayClassName: iap, addresses: [{type: IPAddress, value: 192.0.2.1}], listeners: [{name: http, protocol: HTTP, port: 80, hostname: pinned.test}]}".to_string(),
        route(
            "app",
            "  parentRefs: [{name: pinned}]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let gateway = api_status(&snapshot, Kind::Gateway, "pinned");
    assert_eq!(gateway["conditions"][0]["reason"], "UnsupportedAddress");
    assert_eq!(gateway["conditions"][1]["reason"], "AddressNotUsable");
    assert_eq!(outcome(&snapshot, "pinned.test", get("/")), "none");
    assert_eq!(
        status(&snapshot, Kind::Gateway, "pinned").reason,
        "UnsupportedAddress"
    );
}

#[test]
fn a_newer_gateway_listener_on_the_same_port_and_hostname_is_conflicted_not_served() {
    let world = [
        policy("p", "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}, {group: gateway.networking.k8s.io, kind: Gateway, name: late}]"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: late, namespace: apps, creationTimestamp: \"2030-01-01T00:00:00Z\"}\nspec:\n  gatewayClassName: iap\n  listeners:\n  - {name: same, protocol: HTTP, port: 80, hostname: shared.test}\n  - {name: own, protocol: HTTP, port: 80, hostname: own.test}".to_string(),
        route(
            "hijack",
            "  parentRefs: [{name: late}]\n  hostnames: [shared.test, own.test]\n  rules: [{backendRefs: [{name: two, port: 8080}]}]",
        ),
        route(
            "original",
            "  parentRefs: [{name: web, sectionName: shared}]\n  hostnames: [shared.test]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let late = api_status(&snapshot, Kind::Gateway, "late");
    let same = &late["listeners"][0]["conditions"];
    let conflicted = same
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Conflicted")
        .unwrap();
    assert_eq!(conflicted["status"], "True");
    assert_eq!(conflicted["reason"], "HostnameConflict");
    assert!(
        conflicted["message"].as_str().unwrap().contains("apps/web"),
        "{conflicted}"
    );
    assert_eq!(
        outcome(&snapshot, "shared.test", get("/admin")),
        "forward one.internal:8080 by apps/p",
        "the older Gateway keeps the hostname"
    );
    assert_eq!(
        outcome(&snapshot, "own.test", get("/")),
        "forward two.internal:8080 by apps/p",
        "the newer Gateway's other listener is served"
    );
}

#[test]
fn a_conflicted_https_listener_does_not_take_the_older_gateways_certificate() {
    let secret = |name: &str| {
        let generated = rcgen::generate_simple_self_signed(vec!["secure.test".to_string()])
            .expect("a certificate");
        let indent = |pem: String| {
            pem.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: apps}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(generated.cert.pem()),
            indent(generated.signing_key.serialize_pem()),
        );
        (yaml, generated.cert.der().to_vec())
    };
    let (old_secret, old_der) = secret("old-tls");
    let (new_secret, _) = secret("new-tls");
    let gateway = |name: &str, created: &str, secret: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: apps, creationTimestamp: \"{created}\"}}\nspec:\n  gatewayClassName: iap\n  listeners:\n  - {{name: https, protocol: HTTPS, port: 443, hostname: secure.test, tls: {{certificateRefs: [{{name: {secret}}}]}}}}"
        )
    };
    let world = [
        old_secret,
        new_secret,
        gateway("older", "2020-01-01T00:00:00Z", "old-tls"),
        gateway("newer", "2030-01-01T00:00:00Z", "new-tls"),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let served = snapshot
        .table
        .certificates
        .get("secure.test")
        .expect("a certificate for the hostname");
    assert_eq!(served.cert[0].as_ref(), old_der.as_slice());
    let newer = api_status(&snapshot, Kind::Gateway, "newer");
    assert!(newer.to_string().contains("HostnameConflict"), "{newer}");
}
