//! GRPCRoutes in, table entries and statuses out.

use http::HeaderMap;

use super::tests::{api_status, kind_parent_conditions, outcome, policy, snapshot, status};
use crate::index::Kind;
use crate::model::{RequestView, RouteAction};

fn grpc_route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{spec}"
    )
}

const THREE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: three, namespace: apps}\nspec: {type: ExternalName, externalName: three.internal, ports: [{port: 8080}]}";

const GATEWAY_POLICY: &str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]";

/// A gRPC call: a POST of `/service/method`.
fn call<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        path,
        method: "POST",
        headers: Some(headers),
        query: "",
        tls: false,
    }
}

#[test]
fn grpc_route_exact_method_matching_orders_service_then_method_then_headers() {
    let world = [
        policy("p", GATEWAY_POLICY),
        THREE.to_string(),
        grpc_route(
            "echo",
            "  parentRefs: [{name: web}]\n  hostnames: [grpc.example.com]\n  rules:\n  - {matches: [{method: {service: kube_iap.test.Echo, method: Say}}], backendRefs: [{name: one, port: 8080}]}\n  - {matches: [{method: {service: kube_iap.test.Echo}}], backendRefs: [{name: two, port: 8080}]}\n  - {matches: [{method: {method: Count}}], backendRefs: [{name: three, port: 8080}]}\n  - {matches: [{method: {service: kube_iap.test.Echo}, headers: [{name: Canary, value: \"yes\"}]}], backendRefs: [{name: three, port: 8080}]}",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    let mut canary = HeaderMap::new();
    canary.insert("canary", "yes".parse().unwrap());
    let cases = [
        (call("/kube_iap.test.Echo/Say", &none), "forward one"),
        // Service characters before method characters: the service's rule, not `Count`'s.
        (call("/kube_iap.test.Echo/Count", &none), "forward two"),
        (call("/kube_iap.test.Echo/Other", &none), "forward two"),
        (call("/kube_iap.test.Echo/Other", &canary), "forward three"),
        (call("/other.Svc/Count", &none), "forward three"),
        (call("/other.Svc/Say", &none), "none"),
        // Service names are case-sensitive, as gRPC's are.
        (call("/KUBE_IAP.TEST.ECHO/Say", &none), "none"),
    ];
    for (request, want) in cases {
        let got = outcome(&snapshot, "grpc.example.com", request);
        assert!(got.starts_with(want), "{}: {got}", request.path);
    }
    let route = snapshot
        .table
        .route_for("grpc.example.com", &call("/kube_iap.test.Echo/Say", &none))
        .unwrap();
    let RouteAction::Forward(backend) = &route.action else {
        panic!("forwards");
    };
    assert!(backend.h2c, "GRPCRoute backends are reached over h2c");
    assert_eq!(
        kind_parent_conditions(&snapshot, Kind::GrpcRoute, "echo"),
        [
            "Accepted=True:Accepted",
            "ResolvedRefs=True:ResolvedRefs",
            "kube-iap.io/Protected=True:Protected"
        ]
    );
}

#[test]
fn a_grpc_route_without_matches_takes_every_call_and_fails_closed_without_a_policy() {
    let world = grpc_route(
        "open",
        "  parentRefs: [{name: web}]\n  hostnames: [grpc.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
    );
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    assert_eq!(
        outcome(&snapshot, "grpc.example.com", call("/any.Svc/Any", &none)),
        "refused"
    );
    assert!(
        kind_parent_conditions(&snapshot, Kind::GrpcRoute, "open")
            .contains(&"kube-iap.io/Protected=False:NoPolicy".to_string())
    );
    assert!(!status(&snapshot, Kind::GrpcRoute, "open").ready);
}

#[test]
fn a_policy_attaches_to_a_grpc_route_and_not_to_an_http_route_of_the_same_name() {
    let world = [
        policy("grpc-only", "[{group: gateway.networking.k8s.io, kind: GRPCRoute, name: app}]"),
        grpc_route(
            "app",
            "  parentRefs: [{name: web}]\n  hostnames: [grpc.example.com]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app, namespace: apps}\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [http.example.com]\n  rules: [{backendRefs: [{name: two, port: 8080}]}]".to_string(),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    assert_eq!(
        outcome(&snapshot, "grpc.example.com", call("/a.B/C", &none)),
        "forward one.internal:8080 by apps/grpc-only"
    );
    assert_eq!(
        outcome(&snapshot, "http.example.com", call("/", &none)),
        "refused"
    );
    let ancestors = &api_status(&snapshot, Kind::IapPolicy, "grpc-only")["ancestors"];
    assert_eq!(ancestors[0]["ancestorRef"]["kind"], "GRPCRoute");
    assert_eq!(ancestors[0]["conditions"][0]["reason"], "Accepted");
}

#[test]
fn listeners_support_grpc_routes_unless_their_allowed_kinds_leave_them_out() {
    let world = [
        policy("p", GATEWAY_POLICY),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: http-only, namespace: apps}\nspec:\n  gatewayClassName: iap\n  listeners:\n  - {name: http, protocol: HTTP, port: 80, hostname: only.test, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}".to_string(),
        grpc_route(
            "refused",
            "  parentRefs: [{name: http-only}]\n  rules: [{backendRefs: [{name: one, port: 8080}]}]",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let web = api_status(&snapshot, Kind::Gateway, "web");
    let kinds: Vec<&str> = web["listeners"][0]["supportedKinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| kind["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(
        kind_parent_conditions(&snapshot, Kind::GrpcRoute, "refused")[0],
        "Accepted=False:NotAllowedByListeners"
    );
}

#[test]
fn a_grpc_rule_with_a_filter_it_cannot_have_answers_500_and_the_others_keep_working() {
    let world = [
        policy("p", GATEWAY_POLICY),
        grpc_route(
            "odd",
            "  parentRefs: [{name: web}]\n  hostnames: [grpc.example.com]\n  rules:\n  - {matches: [{method: {service: redirect.Svc}}], filters: [{type: RequestRedirect, requestRedirect: {hostname: x.test}}], backendRefs: [{name: one, port: 8080}]}\n  - {matches: [{method: {service: fine.Svc}}], backendRefs: [{name: two, port: 8080}]}",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    let redirected = outcome(
        &snapshot,
        "grpc.example.com",
        call("/redirect.Svc/M", &none),
    );
    assert!(
        redirected.starts_with("fails") && redirected.contains("not valid on a GRPCRoute"),
        "{redirected}"
    );
    assert!(
        outcome(&snapshot, "grpc.example.com", call("/fine.Svc/M", &none))
            .starts_with("forward two")
    );
    assert!(
        kind_parent_conditions(&snapshot, Kind::GrpcRoute, "odd")
            .contains(&"PartiallyInvalid=True:UnsupportedValue".to_string())
    );
}

/// A match kube-iap cannot serve matches nothing: if its rule simply went missing, the calls
/// meant for it would reach the route's broader rules, under whatever policy those have.
#[test]
fn a_grpc_route_with_a_match_kube_iap_cannot_serve_fails_closed_as_a_whole() {
    let world = [
        policy("p", GATEWAY_POLICY),
        policy(
            "strict",
            "[{group: gateway.networking.k8s.io, kind: GRPCRoute, name: odd, sectionName: admin}]",
        ),
        grpc_route(
            "odd",
            "  parentRefs: [{name: web}]\n  hostnames: [grpc.example.com]\n  rules:\n  - {name: admin, matches: [{method: {type: RegularExpression, service: \"admin.*\"}}], backendRefs: [{name: one, port: 8080}]}\n  - {backendRefs: [{name: two, port: 8080}]}",
        ),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    for path in ["/admin.Users/Delete", "/other.Svc/M"] {
        let got = outcome(&snapshot, "grpc.example.com", call(path, &none));
        assert!(
            got.starts_with("fails") && got.contains("RegularExpression"),
            "{path}: {got}"
        );
    }
    assert!(
        kind_parent_conditions(&snapshot, Kind::GrpcRoute, "odd")
            .contains(&"PartiallyInvalid=True:UnsupportedValue".to_string())
    );
}

#[test]
fn an_http_route_reaches_an_h2c_service_over_h2c_but_never_mixes_protocols_in_one_rule() {
    let h2c = "apiVersion: v1\nkind: Service\nmetadata: {name: h2c, namespace: apps}\nspec: {type: ExternalName, externalName: h2c.internal, ports: [{port: 8080, appProtocol: kubernetes.io/h2c}]}";
    let world = [
        policy("p", GATEWAY_POLICY),
        h2c.to_string(),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app, namespace: apps}\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [app.example.com]\n  rules:\n  - {matches: [{path: {value: /h2c}}], backendRefs: [{name: h2c, port: 8080}]}\n  - {matches: [{path: {value: /mixed}}], backendRefs: [{name: h2c, port: 8080}, {name: one, port: 8080}]}\n  - {backendRefs: [{name: one, port: 8080}]}".to_string(),
    ]
    .join("\n---\n");
    let snapshot = snapshot(&world);
    let none = HeaderMap::new();
    let h2c_of = |path| match &snapshot
        .table
        .route_for("app.example.com", &call(path, &none))
        .unwrap()
        .action
    {
        RouteAction::Forward(backend) => Some(backend.h2c),
        _ => None,
    };
    assert_eq!(h2c_of("/h2c"), Some(true));
    assert_eq!(h2c_of("/"), Some(false));
    assert_eq!(
        h2c_of("/mixed"),
        None,
        "a rule mixing protocols answers 500"
    );
    assert!(
        super::tests::kind_parent_conditions(&snapshot, Kind::HttpRoute, "app")
            .contains(&"PartiallyInvalid=True:UnsupportedValue".to_string())
    );
}
