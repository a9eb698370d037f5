//! GRPCRoute through the running proxy (local mode), with real gRPC servers and clients
//! (`@grpc/grpc-js`): HTTP/2 from the client (h2c with prior knowledge, or TLS with ALPN), h2c to
//! the backends, and refusals as gRPC statuses. Tests are named after the Gateway API
//! conformance tests they mirror where there is one.

use serde_json::{Value, json};

use crate::support;
use support::certificates::certificate;
use support::grpc::{self, GrpcServer};
use support::manifests::{self, write};

const KEY: [u8; 32] = [7; 32];
const HOST: &str = "grpc.test";

/// Signed-in users of example.com get in; anyone else is refused.
const POLICY: &str = r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: echo-policy, namespace: default}
spec:
  oauthClientRef: {name: idp}
  access: [{members: ["domain:example.com"]}]
  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo}]
"#;

/// `alpha` serves `kube_iap.test.Echo`; `beta` serves it and `other.pkg.Svc`.
const ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: kube_iap.test.Echo, method: Say}}, {method: {service: kube_iap.test.Echo, method: Count}}]
    backendRefs: [{name: alpha, port: 80}]
  - matches: [{method: {service: other.pkg.Svc}}, {method: {service: kube_iap.test.Echo}, headers: [{name: version, value: two}]}]
    backendRefs: [{name: beta, port: 80}]
"#;

struct World {
    server: kube_iap::serve::Running,
    _alpha: GrpcServer,
    _beta: GrpcServer,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(extra: &[&str]) -> World {
        let alpha = grpc::server("alpha", &[]).await;
        let beta = grpc::server("beta", &["other.pkg.Svc"]).await;
        let dir = manifests::folder(&[("alpha", alpha.port), ("beta", beta.port)]);
        write(
            dir.path(),
            "keys.yaml",
            &manifests::session_keys(&[("k", KEY)]),
        );
        write(dir.path(), "gateway.yaml", manifests::GATEWAY);
        let mut app = vec![POLICY, ROUTE];
        app.extend_from_slice(extra);
        write(dir.path(), "app.yaml", &app.join("\n---\n"));
        let server = support::start_server(dir.path()).await;
        World {
            server,
            _alpha: alpha,
            _beta: beta,
            _dir: dir,
        }
    }

    /// The calls over h2c to the proxy's plain port, as `grpc.test`.
    async fn call(&self, calls: Value) -> Vec<Value> {
        grpc::call(self.server.http_addr.unwrap(), HOST, None, calls).await
    }
}

fn signed_in(email: &str) -> String {
    support::sessions::cookie(KEY, HOST, email, &[], 600)
}

#[tokio::test]
async fn grpc_exact_method_matching_forwards_over_h2c_with_the_callers_identity() {
    let world = World::start(&[]).await;
    let cookie = signed_in("ann@example.com");
    let results = world
        .call(json!([
            {"path": "/kube_iap.test.Echo/Say", "message": "hello",
             "metadata": {"cookie": cookie, "x-kube-iap-authenticated-user-email": "root@evil.test"}},
            {"path": "/other.pkg.Svc/Say", "message": "elsewhere", "metadata": {"cookie": cookie}},
            {"path": "/kube_iap.test.Echo/Count", "count": 3, "metadata": {"cookie": cookie}},
            {"path": "/kube_iap.test.Echo/Say", "message": "fail", "metadata": {"cookie": cookie}},
            {"path": "/kube_iap.test.Echo/Unknown", "message": "x", "metadata": {"cookie": cookie}},
        ]))
        .await;

    let said = &results[0];
    assert_eq!(said["code"], 0, "{said}");
    assert_eq!(said["reply"]["server"], "alpha");
    assert_eq!(said["reply"]["message"], "hello");
    assert_eq!(said["reply"]["authority"], HOST);
    let seen = &said["reply"]["metadata"];
    assert_eq!(
        seen["x-kube-iap-authenticated-user-email"], "ann@example.com",
        "the proxy's identity replaces the one the client sent: {seen}"
    );
    assert!(
        seen["x-kube-iap-jwt-assertion"]
            .as_str()
            .is_some_and(|jwt| jwt.split('.').count() == 3)
    );
    assert!(
        seen.get("cookie").is_none(),
        "the session cookie stays with the proxy: {seen}"
    );
    assert_eq!(said["headers"]["x-echo-server"], "alpha");
    assert_eq!(
        said["trailers"]["x-echo-trailer"], "yes",
        "trailers come through: {said}"
    );

    assert_eq!(results[1]["reply"]["server"], "beta", "{}", results[1]);
    assert_eq!(results[1]["reply"]["path"], "/other.pkg.Svc/Say");

    let counted: Vec<&str> = results[2]["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reply| reply["message"].as_str().unwrap())
        .collect();
    assert_eq!(counted, ["1", "2", "3"], "server streaming: {}", results[2]);
    assert_eq!(results[2]["code"], 0);

    let failed = &results[3];
    assert_eq!(
        failed["code"], 9,
        "the backend's own status reaches the client: {failed}"
    );
    assert_eq!(failed["details"], "asked to fail");
    assert_eq!(failed["trailers"]["x-echo-trailer"], "yes");

    let unmatched = &results[4];
    assert_eq!(
        unmatched["code"], 12,
        "no rule matches: UNIMPLEMENTED: {unmatched}"
    );
    assert_eq!(
        unmatched["trailers"]["x-kube-iap-generated-response"],
        "true"
    );
}

#[tokio::test]
async fn grpc_route_header_matching_picks_the_rule_with_the_header() {
    let world = World::start(&[]).await;
    let cookie = signed_in("ann@example.com");
    let results = world
        .call(json!([
            {"path": "/kube_iap.test.Echo/Other", "message": "x",
             "metadata": {"cookie": cookie, "version": "two"}},
            {"path": "/kube_iap.test.Echo/Say", "message": "x",
             "metadata": {"cookie": cookie, "version": "two"}},
        ]))
        .await;
    // beta serves Echo too, but has no `Other` method: its own UNIMPLEMENTED proves the call
    // reached it, not the proxy's.
    assert_eq!(results[0]["code"], 12, "{}", results[0]);
    assert!(
        results[0]["headers"]
            .get("x-kube-iap-generated-response")
            .is_none()
    );
    assert!(
        results[0]["trailers"]
            .get("x-kube-iap-generated-response")
            .is_none()
    );
    // The exact method outranks a service match with a header.
    assert_eq!(results[1]["reply"]["server"], "alpha", "{}", results[1]);
}

#[tokio::test]
async fn refusals_reach_grpc_clients_as_grpc_statuses() {
    let closed = support::backends::closed_port().await;
    let unprotected = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: nobody-protects, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [open.test]
  rules: [{backendRefs: [{name: alpha, port: 80}]}]
"#;
    let down = format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: down, namespace: default}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [down.test]\n  rules: [{{backendRefs: [{{name: gone, port: 80}}]}}]\n---\napiVersion: kube-iap.io/v1alpha1\nkind: IapPolicy\nmetadata: {{name: down, namespace: default}}\nspec:\n  oauthClientRef: {{name: idp}}\n  access: [{{members: [allUsers]}}]\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: GRPCRoute, name: down}}]\n",
        manifests::service("gone", closed)
    );
    let world = World::start(&[unprotected, &down]).await;
    let say = |metadata: Value| json!({"path": "/kube_iap.test.Echo/Say", "message": "x", "metadata": metadata});
    let results = world
        .call(json!([
            say(json!({})),
            say(json!({"cookie": signed_in("eve@elsewhere.test")})),
            say(json!({"authorization": "Bearer not-a-token"})),
        ]))
        .await;
    let codes: Vec<&Value> = results.iter().map(|r| &r["code"]).collect();
    assert_eq!(codes, [16, 7, 16], "{results:?}");
    assert!(
        results[1]["details"]
            .as_str()
            .unwrap()
            .contains("eve@elsewhere.test"),
        "the denial says who was refused: {}",
        results[1]
    );
    assert!(
        results[2]["details"]
            .as_str()
            .unwrap()
            .starts_with("Error code 13"),
        "{}",
        results[2]
    );

    let http = world.server.http_addr.unwrap();
    let open = grpc::call(http, "open.test", None, json!([say(json!({}))])).await;
    assert_eq!(
        open[0]["code"], 7,
        "a route no policy protects is refused: {}",
        open[0]
    );
    let gone = grpc::call(http, "down.test", None, json!([say(json!({}))])).await;
    assert_eq!(
        gone[0]["code"], 14,
        "a backend that is down is UNAVAILABLE: {}",
        gone[0]
    );
}

#[tokio::test]
async fn grpc_over_tls_with_a_real_id_token() {
    let provider = support::idp::start(&[]).await;
    let token = support::idp::id_token(&provider, "ann@example.com").await;
    let alpha = grpc::server("alpha", &[]).await;
    let cert = certificate("secure.grpc.test", "grpc-tls");
    let dir = manifests::folder(&[("alpha", alpha.port)]);
    write(
        dir.path(),
        "client.yaml",
        &support::idp::oauth_client(&provider.issuer, support::idp::CLIENT_SECRET, &[]),
    );
    write(
        dir.path(),
        "app.yaml",
        &format!(
            r#"{}---
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: default}}
spec:
  gatewayClassName: kube-iap
  listeners:
  - {{name: https, protocol: HTTPS, port: 443, hostname: secure.grpc.test, tls: {{certificateRefs: [{{name: grpc-tls}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: secure}}]
  rules: [{{backendRefs: [{{name: alpha, port: 80}}]}}]
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: echo, namespace: default}}
spec:
  oauthClientRef: {{name: idp}}
  access: [{{members: ["user:ann@example.com"]}}]
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: secure}}]
"#,
            cert.secret_yaml,
            manifests::GATEWAY,
        ),
    );
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.pem).expect("write CA");
    let server = support::start_server(dir.path()).await;
    let https = server.https_addr.expect("https listener");
    let results = grpc::call(
        https,
        "secure.grpc.test",
        Some(&ca),
        json!([
            {"path": "/kube_iap.test.Echo/Say", "message": "over tls",
             "metadata": {"authorization": format!("Bearer {token}")}},
            {"path": "/kube_iap.test.Echo/Say", "message": "anonymous"},
        ]),
    )
    .await;
    assert_eq!(results[0]["code"], 0, "{}", results[0]);
    assert_eq!(results[0]["reply"]["message"], "over tls");
    let seen = &results[0]["reply"]["metadata"];
    assert_eq!(
        seen["x-kube-iap-authenticated-user-email"], "ann@example.com",
        "{seen}"
    );
    assert!(
        seen.get("authorization").is_none(),
        "the ID token stays with the proxy: {seen}"
    );
    assert_eq!(results[1]["code"], 16, "{}", results[1]);
    // The route is on the HTTPS listener only: the same call in the clear finds nothing.
    let clear = grpc::call(
        server.http_addr.unwrap(),
        "secure.grpc.test",
        None,
        json!([{"path": "/kube_iap.test.Echo/Say", "message": "x", "metadata": {"authorization": format!("Bearer {token}")}}]),
    )
    .await;
    assert_eq!(clear[0]["code"], 12, "{}", clear[0]);
}

#[tokio::test]
async fn http_route_backend_protocol_h2c_reaches_a_service_whose_port_says_h2c() {
    let route = r#"apiVersion: v1
kind: Service
metadata: {name: h2c-only, namespace: default}
spec:
  ports: [{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [h2c.test]
  rules: [{backendRefs: [{name: h2c-only, port: 80}]}]
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: plain, namespace: default}
spec:
  oauthClientRef: {name: idp}
  access: [{members: [allUsers]}]
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain}]
"#;
    let world = World::start(&[route]).await;
    // The Service's endpoints: alpha, which speaks only HTTP/2.
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: h2c-only-1, namespace: default, labels: {{kubernetes.io/service-name: h2c-only}}}}\naddressType: IPv4\nports: [{{name: grpc, port: {}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n",
        world._alpha.port
    );
    write(world._dir.path(), "slice.yaml", &slice);
    let http = world.server.http_addr.unwrap();
    support::eventually(
        "the h2c Service is served through the HTTPRoute",
        || async {
            let results = grpc::call(
                http,
                "h2c.test",
                None,
                json!([{"path": "/kube_iap.test.Echo/Say", "message": "via HTTPRoute"}]),
            )
            .await;
            results[0]["code"] == 0 && results[0]["reply"]["server"] == "alpha"
        },
    )
    .await;
}
