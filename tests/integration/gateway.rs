//! The Gateway API through the running proxy (local mode): a GatewayClass of kube-iap's
//! controller, a Gateway, HTTPRoutes and IapPolicies attached with `targetRefs`, with real
//! backends. Tests are named after the Gateway API conformance tests they mirror.

use crate::support;

use support::manifests::{self, write};
use support::{backends, send, start_server};

const KEY: [u8; 32] = [5; 32];

/// A policy attached to the whole Gateway, admitting every signed-in user.
const GATEWAY_POLICY: &str = r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: gateway-wide, namespace: default}
spec:
  oauthClientRef: {name: idp}
  access: [{members: [allAuthenticatedUsers]}]
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}]
"#;

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: web}}]\n{spec}"
    )
}

struct World {
    server: kube_iap::serve::Running,
    _dir: tempfile::TempDir,
}

impl World {
    /// The Gateway, the given manifests, and echo backends `one` and `two`.
    async fn start(manifests: &[&str]) -> World {
        let one = backends::echo("one").await;
        let two = backends::echo("two").await;
        let dir = manifests::folder(&[("one", one.port()), ("two", two.port())]);
        write(
            dir.path(),
            "keys.yaml",
            &manifests::session_keys(&[("k", KEY)]),
        );
        write(dir.path(), "gateway.yaml", manifests::GATEWAY);
        write(dir.path(), "app.yaml", &manifests.join("\n---\n"));
        let server = start_server(dir.path()).await;
        World { server, _dir: dir }
    }

    /// A signed-in request; the reply's backend name, or the status when the proxy answered.
    async fn call(&self, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let cookie = support::sessions::cookie(KEY, host, "ann@example.com", &[], 600);
        let mut all = vec![("cookie", cookie.as_str()), ("accept", "application/json")];
        all.extend_from_slice(headers);
        let reply = send(
            self.server.http_addr.unwrap(),
            method,
            host,
            path,
            &all,
            bytes::Bytes::new(),
        )
        .await;
        match reply.status.as_u16() {
            200 => reply.json()["backend"].as_str().unwrap().to_string(),
            status => status.to_string(),
        }
    }

    /// The condition of `type_` on the first parent of HTTPRoute `route`.
    async fn route_condition(&self, route: &str, type_: &str) -> serde_json::Value {
        let status = self.status_of("HTTPRoute", route).await;
        status["parents"][0]["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == type_))
            .cloned()
            .unwrap_or_else(|| panic!("no {type_} on HTTPRoute {route}: {status}"))
    }

    async fn status_of(&self, kind: &str, name: &str) -> serde_json::Value {
        let status = support::get(self.server.admin_addr, "admin", "/status", &[])
            .await
            .json();
        status["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("no status for {kind} {name}: {status}"))["status"]
            .clone()
    }
}

#[tokio::test]
async fn http_route_simple_same_namespace_is_signed_in_and_carries_identity() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "app",
            "  hostnames: [app.test]\n  rules: [{backendRefs: [{name: one, port: 80}]}]",
        ),
    ])
    .await;
    let http = world.server.http_addr.unwrap();
    let anonymous = support::get(http, "app.test", "/", &[("accept", "application/json")]).await;
    assert_eq!(anonymous.status, 401, "no credential, no entry");
    let cookie = support::sessions::cookie(KEY, "app.test", "ann@example.com", &[], 600);
    let reply = support::get(http, "app.test", "/x", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, 200);
    let echoed = reply.json();
    assert_eq!(echoed["backend"], "one");
    assert_eq!(
        echoed["headers"]["x-kube-iap-authenticated-user-email"],
        "ann@example.com"
    );
    assert!(echoed["headers"]["x-kube-iap-jwt-assertion"].is_string());

    let route = world.status_of("HTTPRoute", "app").await;
    let conditions = &route["parents"][0]["conditions"];
    assert_eq!(
        route["parents"][0]["controllerName"],
        "kube-iap.io/gateway-controller"
    );
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "True");
    assert!(conditions[0]["lastTransitionTime"].is_string());
    let gateway = world.status_of("Gateway", "web").await;
    assert_eq!(gateway["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(gateway["conditions"][1]["type"], "Programmed");
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_route_no_policy_protects_answers_403_and_says_why() {
    let world = World::start(&[&route(
        "open",
        "  hostnames: [open.test]\n  rules: [{backendRefs: [{name: one, port: 80}]}]",
    )])
    .await;
    let reply = send(
        world.server.http_addr.unwrap(),
        "GET",
        "open.test",
        "/",
        &[("accept", "application/json")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-kube-iap-generated-response"), Some("true"));
    assert!(
        reply.text().contains("no IapPolicy protects it"),
        "{}",
        reply.text()
    );
    let protected = world.route_condition("open", "kube-iap.io/Protected").await;
    assert_eq!(protected["status"], "False");
    assert_eq!(protected["reason"], "NoPolicy");
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_matching_across_routes_follows_the_spec_precedence() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "prefix",
            "  hostnames: [app.test]\n  rules:\n  - {matches: [{path: {type: PathPrefix, value: /v1}}], backendRefs: [{name: one, port: 80}]}",
        ),
        &route(
            "specific",
            "  hostnames: [app.test]\n  rules:\n  - {matches: [{path: {type: Exact, value: /v1}}], backendRefs: [{name: two, port: 80}]}\n  - {matches: [{path: {type: PathPrefix, value: /v1/long}}], backendRefs: [{name: two, port: 80}]}",
        ),
    ])
    .await;
    assert_eq!(
        world.call("GET", "app.test", "/v1", &[]).await,
        "two",
        "exact beats prefix"
    );
    assert_eq!(world.call("GET", "app.test", "/v1/x", &[]).await, "one");
    assert_eq!(
        world.call("GET", "app.test", "/v1/long/x", &[]).await,
        "two",
        "longer prefix wins"
    );
    assert_eq!(
        world.call("GET", "app.test", "/v1long", &[]).await,
        "404",
        "prefixes match whole segments"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_header_query_param_and_method_matching() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "matches",
            "  hostnames: [app.test]\n  rules:\n  - {matches: [{headers: [{name: Version, value: two}]}], backendRefs: [{name: two, port: 80}]}\n  - {matches: [{queryParams: [{name: animal, value: whale}]}], backendRefs: [{name: two, port: 80}]}\n  - {matches: [{method: DELETE}], backendRefs: [{name: two, port: 80}]}\n  - {backendRefs: [{name: one, port: 80}]}",
        ),
    ])
    .await;
    assert_eq!(world.call("GET", "app.test", "/", &[]).await, "one");
    assert_eq!(
        world
            .call("GET", "app.test", "/", &[("version", "two")])
            .await,
        "two"
    );
    assert_eq!(
        world
            .call("GET", "app.test", "/", &[("version", "three")])
            .await,
        "one"
    );
    assert_eq!(
        world.call("GET", "app.test", "/?animal=whale", &[]).await,
        "two"
    );
    assert_eq!(
        world.call("GET", "app.test", "/?animal=dolphin", &[]).await,
        "one"
    );
    assert_eq!(world.call("DELETE", "app.test", "/", &[]).await, "two");
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_hostname_intersection_and_wildcards() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "wild",
            "  hostnames: [\"*.wild.test\"]\n  rules: [{backendRefs: [{name: one, port: 80}]}]",
        ),
        &route(
            "exact",
            "  hostnames: [exact.wild.test]\n  rules: [{backendRefs: [{name: two, port: 80}]}]",
        ),
    ])
    .await;
    assert_eq!(world.call("GET", "a.wild.test", "/", &[]).await, "one");
    assert_eq!(world.call("GET", "a.b.wild.test", "/", &[]).await, "one");
    assert_eq!(world.call("GET", "exact.wild.test", "/", &[]).await, "two");
    assert_eq!(world.call("GET", "wild.test", "/", &[]).await, "404");
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_invalid_backend_refs_answer_500_and_other_rules_keep_working() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "partly",
            "  hostnames: [app.test]\n  rules:\n  - {matches: [{path: {value: /missing}}], backendRefs: [{name: nope, port: 80}]}\n  - {matches: [{path: {value: /foreign}}], backendRefs: [{name: one, namespace: elsewhere, port: 80}]}\n  - {matches: [{path: {value: /kind}}], backendRefs: [{group: example.com, kind: Bucket, name: one}]}\n  - {backendRefs: [{name: one, port: 80}]}",
        ),
    ])
    .await;
    for path in ["/missing", "/foreign", "/kind"] {
        assert_eq!(
            world.call("GET", "app.test", path, &[]).await,
            "500",
            "{path}"
        );
    }
    assert_eq!(world.call("GET", "app.test", "/fine", &[]).await, "one");
    let resolved = world.route_condition("partly", "ResolvedRefs").await;
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_policy_on_a_route_rule_takes_precedence_over_the_gateways() {
    let admins_only = r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: admins, namespace: default}
spec:
  oauthClientRef: {name: idp}
  access: [{members: ["group:admins"]}]
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app, sectionName: admin}]
"#;
    let world = World::start(&[
        GATEWAY_POLICY,
        admins_only,
        &route(
            "app",
            "  hostnames: [app.test]\n  rules:\n  - {name: admin, matches: [{path: {value: /admin}}], backendRefs: [{name: two, port: 80}]}\n  - {backendRefs: [{name: one, port: 80}]}",
        ),
    ])
    .await;
    assert_eq!(world.call("GET", "app.test", "/", &[]).await, "one");
    assert_eq!(
        world.call("GET", "app.test", "/admin", &[]).await,
        "403",
        "ann is not an admin"
    );
    let policy = world.status_of("IapPolicy", "admins").await;
    assert_eq!(policy["ancestors"][0]["ancestorRef"]["kind"], "HTTPRoute");
    assert_eq!(
        policy["ancestors"][0]["conditions"][0]["reason"],
        "Accepted"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_request_and_response_header_modifiers() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "headers",
            r#"  hostnames: [app.test]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: by-route}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Response, value: from-route}]
        remove: [Set-Cookie]
    backendRefs: [{name: one, port: 80}]"#,
        ),
    ])
    .await;
    let cookie = support::sessions::cookie(KEY, "app.test", "ann@example.com", &[], 600);
    let reply = support::get(
        world.server.http_addr.unwrap(),
        "app.test",
        "/",
        &[
            ("cookie", &cookie),
            ("x-set", "from-client"),
            ("x-add", "from-client"),
            ("x-remove", "gone"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-response"), Some("from-route"));
    assert_eq!(
        reply.header("set-cookie"),
        None,
        "the backend's cookie is removed"
    );
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-set"], "by-route");
    assert_eq!(seen["x-add"], "from-client, added");
    assert!(seen["x-remove"].is_null());
    assert_eq!(
        seen["x-kube-iap-authenticated-user-email"],
        "ann@example.com"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_rewrite_path_and_host() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "rewrite",
            r#"  hostnames: [app.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: one, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one/page}}
    backendRefs: [{name: one, port: 80}]"#,
        ),
    ])
    .await;
    let cookie = support::sessions::cookie(KEY, "app.test", "ann@example.com", &[], 600);
    let http = world.server.http_addr.unwrap();
    let reply = support::get(http, "app.test", "/old/page?x=1", &[("cookie", &cookie)]).await;
    let seen = reply.json();
    assert_eq!(seen["path"], "/new/page");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["host"], "internal.test");
    let reply = support::get(http, "app.test", "/full/anything", &[("cookie", &cookie)]).await;
    assert_eq!(reply.json()["path"], "/one/page");
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_redirects_answer_before_sign_in() {
    let world = World::start(&[&route(
        "redirects",
        r#"  hostnames: [app.test]
  rules:
  - matches: [{path: {value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {value: /elsewhere}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: other.test, port: 8080, path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved}}}]
  - matches: [{path: {value: /see-other}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303}}]
  - matches: [{path: {value: /temporary}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]
  - matches: [{path: {value: /permanent}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]"#,
    )])
    .await;
    let http = world.server.http_addr.unwrap();
    // HTTPRoute303RedirectStatusCode, ...307..., ...308...: the method-keeping codes too.
    for (path, status, location) in [
        ("/see-other", 303, "http://app.test/see-other"),
        ("/temporary/x", 307, "http://app.test/temporary/x"),
        ("/permanent/x", 308, "http://app.test/new"),
    ] {
        let reply = support::get(http, "app.test", path, &[]).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(reply.header("location"), Some(location), "{path}");
    }
    let reply = support::get(http, "app.test", "/scheme/a?b=c", &[]).await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://app.test/scheme/a?b=c")
    );
    let reply = support::get(http, "app.test", "/elsewhere/page", &[]).await;
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("http://other.test:8080/moved/page")
    );
    let protected = world
        .route_condition("redirects", "kube-iap.io/Protected")
        .await;
    assert_eq!(
        protected["status"], "True",
        "a redirect reaches no backend: {protected}"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_weight_splits_requests_in_proportion() {
    let world = World::start(&[
        GATEWAY_POLICY,
        &route(
            "split",
            "  hostnames: [app.test]\n  rules:\n  - backendRefs: [{name: one, port: 80, weight: 3}, {name: two, port: 80, weight: 1}, {name: nobody, port: 80, weight: 0}]",
        ),
    ])
    .await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..200 {
        *counts
            .entry(world.call("GET", "app.test", "/", &[]).await)
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("one"), Some(&150), "{counts:?}");
    assert_eq!(counts.get("two"), Some(&50), "{counts:?}");
    world.server.shutdown().await;
}

#[tokio::test]
async fn http_route_reference_grant_opens_a_service_of_another_namespace() {
    let shared = backends::echo("shared").await;
    let service = manifests::service("shared", shared.port())
        .replace("namespace: default", "namespace: other");
    let grant = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-default, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"#;
    let with_grant = World::start(&[
        GATEWAY_POLICY,
        &service,
        grant,
        &route(
            "cross",
            "  hostnames: [app.test]\n  rules: [{backendRefs: [{name: shared, namespace: other, port: 80}]}]",
        ),
    ])
    .await;
    assert_eq!(with_grant.call("GET", "app.test", "/", &[]).await, "shared");
    with_grant.server.shutdown().await;

    let without = World::start(&[
        GATEWAY_POLICY,
        &service,
        &route(
            "cross",
            "  hostnames: [app.test]\n  rules: [{backendRefs: [{name: shared, namespace: other, port: 80}]}]",
        ),
    ])
    .await;
    assert_eq!(without.call("GET", "app.test", "/", &[]).await, "500");
    let resolved = without.route_condition("cross", "ResolvedRefs").await;
    assert_eq!(resolved["reason"], "RefNotPermitted");
    without.server.shutdown().await;
}
