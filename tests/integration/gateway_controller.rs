//! The Gateway API in a cluster: a real kube-apiserver with the Gateway API CRDs as the chart
//! installs them (after the controller started), and `kube-iap controller` running with the
//! chart's RBAC. The GatewayClass, Gateway, HTTPRoutes, GRPCRoutes and the attached IapPolicy
//! get the spec's statuses (another controller's entries in a route's shared `status.parents`
//! stay), and requests reach the backend.

use crate::controller::{client_and_service, service_account_client, start_controller};
use crate::support::testbed::Testbed;
use crate::support::{backends, get, within};
use serde_json::Value;

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

async fn status(testbed: &Testbed, namespace: &str, kind: &str, name: &str) -> Value {
    let api_version = if kind == "IapPolicy" {
        "kube-iap.io/v1alpha1"
    } else {
        GATEWAY_API
    };
    testbed
        .get(namespace, api_version, kind, name)
        .await
        .map(|object| object["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn gateways_and_http_routes_get_the_specs_statuses_and_serve_traffic_on_a_real_api_server() {
    let testbed = Testbed::start();
    let scratch = tempfile::tempdir().expect("scratch");
    testbed.install_crds();
    let client = service_account_client(&testbed, scratch.path()).await;
    let namespace = testbed.namespace("gateway").await;
    let backend = backends::echo("web").await;
    testbed
        .apply(&namespace, &client_and_service(backend))
        .await;
    // The controller starts before the Gateway API CRDs exist, as it may when one `helm
    // install` creates both: it serves without them, and finds them once they are installed.
    let running = start_controller(client, &namespace, "kube-iap", "replica-a").await;
    within(30, "the first table, without the Gateway API", || async {
        get(running.admin_addr, "admin", "/readyz", &[])
            .await
            .status
            == 200
    })
    .await;
    testbed.install_gateway_api();
    testbed
        .apply(
            "",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: kube-iap}\nspec: {controllerName: kube-iap.io/gateway-controller}\n",
        )
        .await;
    let port = backend.port();
    testbed
        .apply(
            &namespace,
            &format!(
                r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: kube-iap
  listeners:
  - {{name: http, protocol: HTTP, port: 80}}
  - {{name: odd, protocol: HTTP, port: 8081, hostname: odd.test}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app}}
spec:
  parentRefs: [{{name: web, sectionName: http}}, {{name: elsewhere}}]
  hostnames: [app.test]
  rules:
  - backendRefs: [{{name: web, port: {port}}}]
  - matches: [{{path: {{value: /missing}}}}]
    backendRefs: [{{name: nobody, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: rpc}}
spec:
  parentRefs: [{{name: web, sectionName: http}}]
  hostnames: [rpc.test]
  rules:
  - matches: [{{method: {{service: kube_iap.test.Echo, method: Say}}}}]
    backendRefs: [{{name: web, port: {port}}}]
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: everyone}}
spec:
  oauthClientRef: {{name: idp}}
  access: [{{members: [allUsers]}}]
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]
"#
            ),
        )
        .await;
    // Another implementation already reports on its own parent of the same route.
    testbed.kubectl(&[
        "patch", "httproute", "app", "-n", &namespace, "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"parents":[{"parentRef":{"name":"elsewhere"},"controllerName":"example.com/other","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"theirs","lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}"#,
    ]);

    within(30, "the Gateway API statuses", || async {
        let route = status(&testbed, &namespace, "HTTPRoute", "app").await;
        let gateway = status(&testbed, &namespace, "Gateway", "web").await;
        let rpc = status(&testbed, &namespace, "GRPCRoute", "rpc").await;
        route["parents"].as_array().is_some_and(|p| p.len() == 2)
            && rpc["parents"].as_array().is_some_and(|p| p.len() == 1)
            && condition(&gateway["conditions"], "Programmed")["status"] == "True"
            && !status(&testbed, &namespace, "IapPolicy", "everyone").await["ancestors"].is_null()
    })
    .await;

    let class = testbed
        .get("", GATEWAY_API, "GatewayClass", "kube-iap")
        .await
        .unwrap();
    let accepted = condition(&class["status"]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True", "{class}");
    assert_eq!(
        accepted["observedGeneration"],
        class["metadata"]["generation"]
    );
    let features = class["status"]["supportedFeatures"].as_array().unwrap();
    assert!(
        features
            .iter()
            .any(|feature| feature["name"] == "GRPCRoute"),
        "the API server keeps the supported features: {class}"
    );

    let gateway = status(&testbed, &namespace, "Gateway", "web").await;
    assert_eq!(gateway["addresses"][0]["value"], "203.0.113.7", "{gateway}");
    let listener = |name: &str| {
        gateway["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        listener("http")["attachedRoutes"],
        2,
        "the HTTPRoute and the GRPCRoute"
    );
    let kinds: Vec<Value> = listener("http")["supportedKinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| kind["kind"].clone())
        .collect();
    assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(
        condition(&listener("odd")["conditions"], "Accepted")["reason"],
        "PortUnavailable"
    );

    let route = status(&testbed, &namespace, "HTTPRoute", "app").await;
    let parents = route["parents"].as_array().unwrap();
    let theirs = parents
        .iter()
        .find(|p| p["controllerName"] == "example.com/other")
        .unwrap();
    assert_eq!(
        condition(&theirs["conditions"], "Accepted")["message"],
        "theirs"
    );
    let ours = parents
        .iter()
        .find(|p| p["controllerName"] == "kube-iap.io/gateway-controller")
        .unwrap();
    assert_eq!(ours["parentRef"]["sectionName"], "http");
    assert_eq!(condition(&ours["conditions"], "Accepted")["status"], "True");
    assert_eq!(
        condition(&ours["conditions"], "ResolvedRefs")["reason"],
        "BackendNotFound"
    );
    assert_eq!(
        condition(&ours["conditions"], "kube-iap.io/Protected")["status"],
        "True"
    );

    let rpc = status(&testbed, &namespace, "GRPCRoute", "rpc").await;
    let rpc_parent = &rpc["parents"][0];
    assert_eq!(
        rpc_parent["controllerName"],
        "kube-iap.io/gateway-controller"
    );
    for type_ in ["Accepted", "ResolvedRefs", "kube-iap.io/Protected"] {
        assert_eq!(
            condition(&rpc_parent["conditions"], type_)["status"],
            "True",
            "{type_}: {rpc}"
        );
    }

    let policy = status(&testbed, &namespace, "IapPolicy", "everyone").await;
    assert_eq!(policy["ancestors"][0]["ancestorRef"]["name"], "web");
    assert_eq!(
        condition(&policy["ancestors"][0]["conditions"], "Accepted")["reason"],
        "Accepted"
    );

    let http = running.http_addr.unwrap();
    let reply = get(
        http,
        "app.test",
        "/hello",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["backend"], "web");
    let missing = get(
        http,
        "app.test",
        "/missing",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(missing.status, 500);
    running.shutdown().await;
}
