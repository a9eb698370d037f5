//! Objects in, table and statuses out. Each test builds a small world with the `mk_*` helpers.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::api::*;
use crate::model::RouteAction;

const NS: &str = "apps";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        generation: Some(3),
        ..Default::default()
    }
}

fn meta_created(name: &str, second: i64) -> ObjectMeta {
    let time =
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).expect("valid time");
    ObjectMeta {
        creation_timestamp: Some(Time(time)),
        ..meta(name)
    }
}

fn mk_client(name: &str, client_id: &str, secret: Option<(&str, &str)>) -> Resource {
    Resource::OAuthClient(Box::new(OAuthClient {
        metadata: meta(name),
        spec: OAuthClientSpec {
            issuer: "https://idp.example.com".into(),
            client_id: client_id.into(),
            client_secret_ref: secret.map(|(name, key)| SecretKeyRef {
                name: name.into(),
                key: key.into(),
            }),
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            audiences: vec![],
            trusted_issuers: vec![],
            assume_email_verified: false,
        },
        status: None,
    }))
}

fn mk_secret(name: &str, entries: &[(&str, &[u8])]) -> Resource {
    let data: BTreeMap<String, ByteString> = entries
        .iter()
        .map(|(key, value)| (key.to_string(), ByteString(value.to_vec())))
        .collect();
    Resource::Secret(Box::new(Secret {
        metadata: meta(name),
        data: Some(data),
        ..Default::default()
    }))
}

fn mk_policy_spec(client: &str, hosts: &[&str], backend: Option<(&str, u16)>) -> IapPolicySpec {
    IapPolicySpec {
        oauth_client_ref: LocalObjectRef {
            name: client.into(),
        },
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: vec!["/".into()],
        backend: backend.map(|(service, port)| BackendRef {
            service: service.into(),
            port,
        }),
        tls: None,
        access: vec![AccessRule {
            members: vec!["allUsers".into()],
            when: None,
        }],
        deny: vec![],
        public_paths: vec![],
        cors: None,
        session: None,
        rate_limit: None,
        tcp_forwarding: None,
        pass_authorization_header: false,
        signed_headers: None,
        google_compatible_headers: false,
        target_refs: vec![],
    }
}

fn mk_policy(name: &str, created: i64, spec: IapPolicySpec) -> Resource {
    Resource::IapPolicy(Box::new(IapPolicy {
        metadata: meta_created(name, created),
        spec,
        status: None,
    }))
}

fn mk_service(name: &str, ports: &[(Option<&str>, i32)], annotations: &[(&str, &str)]) -> Resource {
    let mut metadata = meta(name);
    if !annotations.is_empty() {
        metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    let ports = ports
        .iter()
        .map(|(name, port)| ServicePort {
            name: name.map(String::from),
            port: *port,
            ..Default::default()
        })
        .collect();
    Resource::Service(Box::new(Service {
        metadata,
        spec: Some(ServiceSpec {
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }))
}

fn mk_slice(
    service: &str,
    port: (Option<&str>, i32),
    endpoints: &[(&str, Option<bool>)],
) -> Resource {
    let mut metadata = meta(&format!("{service}-abc{}", endpoints.len()));
    metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into());
    Resource::EndpointSlice(Box::new(EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(address, ready)| Endpoint {
                    addresses: vec![address.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: port.0.map(String::from),
            port: Some(port.1),
            ..Default::default()
        }]),
    }))
}

/// A healthy client `idp` with its secret, a Service `web` on port 80 with one ready endpoint.
fn healthy_world() -> Index {
    let mut index = Index::default();
    index.apply(mk_secret("idp-secret", &[("secret", b"s3cret")]));
    index.apply(mk_client("idp", "client-1", Some(("idp-secret", "secret"))));
    index.apply(mk_service("web", &[(Some("http"), 80)], &[]));
    index.apply(mk_slice(
        "web",
        (Some("http"), 8080),
        &[
            ("10.0.0.1", Some(true)),
            ("10.0.0.2", None),
            ("10.0.0.3", Some(false)),
        ],
    ));
    index
}

fn status_of<'a>(snapshot: &'a Snapshot, kind: Kind, name: &str) -> &'a ComputedStatus {
    snapshot
        .statuses
        .iter()
        .find(|status| status.kind == kind && status.key.name == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}"))
}

fn upstreams(snapshot: &Snapshot, host: &str, path: &str) -> Vec<String> {
    match &snapshot
        .table
        .route(host, path)
        .expect("route exists")
        .action
    {
        RouteAction::Forward(backend) => backend
            .upstreams
            .iter()
            .map(|u| u.authority.to_string())
            .collect(),
        RouteAction::FailClosed { reason, .. } => panic!("route fails closed: {reason}"),
        RouteAction::Unprotected { reason } => panic!("route is refused: {reason}"),
        RouteAction::Redirect(_) => panic!("route redirects"),
    }
}

fn fail_closed_code(snapshot: &Snapshot, host: &str, path: &str) -> Option<u32> {
    match &snapshot
        .table
        .route(host, path)
        .expect("route exists")
        .action
    {
        RouteAction::FailClosed { code, .. } => code.map(|code| code.number()),
        RouteAction::Forward(_) | RouteAction::Unprotected { .. } | RouteAction::Redirect(_) => {
            panic!("route does not fail closed")
        }
    }
}

#[test]
fn a_healthy_policy_routes_to_ready_endpoints_on_the_target_port() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    let snapshot = index.build();
    assert_eq!(
        upstreams(&snapshot, "app.example.com", "/x"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    let status = status_of(&snapshot, Kind::IapPolicy, "app");
    assert!(status.ready, "{status:?}");
    assert_eq!(status.error_code, None);
    assert_eq!(status.observed_generation, Some(3));
    let client = status_of(&snapshot, Kind::OAuthClient, "idp");
    assert!(client.ready);
    // SHA-256 of "s3cret" (as `printf s3cret | sha256sum` prints it), never the secret itself.
    assert_eq!(
        client.client_secret_sha256.as_deref(),
        Some("1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0")
    );
    assert!(!format!("{:?}", snapshot.statuses).contains("s3cret"));
}

#[test]
fn empty_client_id_or_missing_secret_gives_code_7_and_policies_fail_closed_with_7() {
    let cases: Vec<(&str, Resource, Option<Resource>)> = vec![
        (
            "empty client id",
            mk_client("idp", "", Some(("idp-secret", "secret"))),
            None,
        ),
        ("no secret ref", mk_client("idp", "client-1", None), None),
        (
            "secret missing",
            mk_client("idp", "client-1", Some(("absent", "secret"))),
            None,
        ),
        (
            "key missing",
            mk_client("idp", "client-1", Some(("idp-secret", "other"))),
            None,
        ),
        (
            "empty value",
            mk_client("idp", "client-1", Some(("idp-secret", "secret"))),
            Some(mk_secret("idp-secret", &[("secret", b"")])),
        ),
    ];
    for (case, client, secret) in cases {
        let mut index = healthy_world();
        index.apply(client);
        if let Some(secret) = secret {
            index.apply(secret);
        }
        index.apply(mk_policy(
            "app",
            0,
            mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
        ));
        let snapshot = index.build();
        let client_status = status_of(&snapshot, Kind::OAuthClient, "idp");
        assert_eq!(
            client_status.error_code,
            Some(7),
            "{case}: {client_status:?}"
        );
        assert!(client_status.message.starts_with("Error code 7:"), "{case}");
        assert!(!client_status.ready);
        assert_eq!(
            status_of(&snapshot, Kind::IapPolicy, "app").error_code,
            Some(7),
            "{case}"
        );
        assert_eq!(
            fail_closed_code(&snapshot, "app.example.com", "/"),
            Some(7),
            "{case}"
        );
    }
}

#[test]
fn a_policy_naming_a_missing_oauth_client_gets_code_13() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("nope", &["app.example.com"], Some(("web", 80))),
    ));
    let snapshot = index.build();
    let status = status_of(&snapshot, Kind::IapPolicy, "app");
    assert_eq!(status.error_code, Some(13));
    assert!(
        status.message.starts_with("Error code 13:"),
        "{}",
        status.message
    );
    assert!(status.message.contains("apps/nope"));
    assert_eq!(
        fail_closed_code(&snapshot, "app.example.com", "/"),
        Some(13)
    );
}

#[test]
fn policies_on_one_host_with_different_clients_give_the_newer_one_code_9() {
    let mut index = healthy_world();
    index.apply(mk_secret("other-secret", &[("secret", b"x")]));
    index.apply(mk_client(
        "other",
        "client-2",
        Some(("other-secret", "secret")),
    ));
    index.apply(mk_policy(
        "old",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    let mut newer = mk_policy_spec("other", &["app.example.com"], Some(("web", 80)));
    newer.paths = vec!["/api".into()];
    index.apply(mk_policy("new", 10, newer));
    let snapshot = index.build();
    assert!(status_of(&snapshot, Kind::IapPolicy, "old").ready);
    assert_eq!(
        status_of(&snapshot, Kind::IapPolicy, "new").error_code,
        Some(9)
    );
    assert_eq!(
        fail_closed_code(&snapshot, "app.example.com", "/api/x"),
        Some(9)
    );
    assert_eq!(upstreams(&snapshot, "app.example.com", "/other").len(), 2);
}

#[test]
fn two_policies_claiming_one_host_and_path_the_oldest_wins() {
    let mut index = healthy_world();
    index.apply(mk_service("other", &[(None, 80)], &[]));
    index.apply(mk_slice("other", (None, 9000), &[("10.9.9.9", Some(true))]));
    // Inserted newest first, so map order cannot be what decides.
    index.apply(mk_policy(
        "a-newer",
        50,
        mk_policy_spec("idp", &["app.example.com"], Some(("other", 80))),
    ));
    index.apply(mk_policy(
        "z-older",
        5,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    let snapshot = index.build();
    assert_eq!(
        upstreams(&snapshot, "app.example.com", "/"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    let loser = status_of(&snapshot, Kind::IapPolicy, "a-newer");
    assert!(!loser.ready);
    assert_eq!(loser.reason, "RouteConflict");
    assert!(loser.message.contains("apps/z-older"), "{}", loser.message);
    assert!(status_of(&snapshot, Kind::IapPolicy, "z-older").ready);
}

#[test]
fn an_invalid_policy_fails_closed_without_taking_other_routes_down() {
    let mut index = healthy_world();
    let mut broken = mk_policy_spec("idp", &["broken.example.com"], Some(("web", 80)));
    broken.access = vec![AccessRule {
        members: vec!["everyone".into()],
        when: None,
    }];
    index.apply(mk_policy("broken", 0, broken));
    index.apply(mk_policy(
        "good",
        1,
        mk_policy_spec("idp", &["good.example.com"], Some(("web", 80))),
    ));
    let snapshot = index.build();
    assert_eq!(fail_closed_code(&snapshot, "broken.example.com", "/"), None);
    let status = status_of(&snapshot, Kind::IapPolicy, "broken");
    assert_eq!(status.reason, "InvalidSpec");
    assert!(status.message.contains("everyone"));
    assert_eq!(upstreams(&snapshot, "good.example.com", "/").len(), 2);
}

#[test]
fn a_missing_backend_service_fails_closed_and_says_so() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("absent", 80))),
    ));
    let snapshot = index.build();
    assert_eq!(fail_closed_code(&snapshot, "app.example.com", "/"), None);
    let status = status_of(&snapshot, Kind::IapPolicy, "app");
    assert_eq!(status.reason, "BackendNotFound");
    assert!(status.message.contains("apps/absent"));
}

#[test]
fn annotated_services_become_routes_on_their_own_host() {
    let mut index = healthy_world();
    index.apply(mk_service(
        "annotated",
        &[(Some("http"), 80), (Some("metrics"), 9100)],
        &[
            (POLICY_ANNOTATION, "app"),
            (HOST_ANNOTATION, "Annotated.Example.com"),
            (PORT_ANNOTATION, "http"),
        ],
    ));
    index.apply(mk_slice(
        "annotated",
        (Some("http"), 3000),
        &[("10.1.1.1", Some(true))],
    ));
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], None),
    ));
    let snapshot = index.build();
    assert_eq!(
        upstreams(&snapshot, "annotated.example.com", "/"),
        ["10.1.1.1:3000"]
    );
    assert!(
        snapshot.table.route("app.example.com", "/").is_none(),
        "no spec.backend, no route on spec.hosts"
    );
    assert!(status_of(&snapshot, Kind::IapPolicy, "app").ready);
}

#[test]
fn an_annotated_service_with_several_ports_and_no_port_annotation_is_reported() {
    let mut index = healthy_world();
    index.apply(mk_service(
        "multi",
        &[(Some("a"), 80), (Some("b"), 81)],
        &[(POLICY_ANNOTATION, "app")],
    ));
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], None),
    ));
    let snapshot = index.build();
    assert!(!status_of(&snapshot, Kind::IapPolicy, "app").ready);
    assert!(
        status_of(&snapshot, Kind::IapPolicy, "app")
            .message
            .contains("several ports")
    );
    assert_eq!(fail_closed_code(&snapshot, "app.example.com", "/"), None);
}

#[test]
fn external_name_services_resolve_to_their_host() {
    let mut index = healthy_world();
    let Resource::Service(mut service) = mk_service("ext", &[(None, 443)], &[]) else {
        unreachable!()
    };
    let spec = service.spec.as_mut().expect("spec");
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("backend.internal.example".into());
    index.apply(Resource::Service(service));
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("ext", 443))),
    ));
    assert_eq!(
        upstreams(&index.build(), "app.example.com", "/"),
        ["backend.internal.example:443"]
    );
}

#[test]
fn deleting_and_resetting_objects_changes_the_next_build() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    assert!(index.build().table.route("app.example.com", "/").is_some());
    index.delete(Kind::IapPolicy, &ObjectKey::new(NS, "app"));
    assert!(index.build().table.route("app.example.com", "/").is_none());
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    index.reset(
        Kind::EndpointSlice,
        [mk_slice(
            "web",
            (Some("http"), 8080),
            &[("10.0.0.7", Some(true))],
        )],
    );
    assert_eq!(
        upstreams(&index.build(), "app.example.com", "/"),
        ["10.0.0.7:8080"]
    );
}

#[test]
fn invalid_hosts_are_reported_and_skipped() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec(
            "idp",
            &[
                "https://app.example.com",
                "ok.example.com",
                "a.example.com:443",
            ],
            Some(("web", 80)),
        ),
    ));
    let snapshot = index.build();
    let status = status_of(&snapshot, Kind::IapPolicy, "app");
    assert_eq!(status.reason, "InvalidHost");
    assert!(snapshot.table.route("ok.example.com", "/").is_some());
    assert_eq!(snapshot.table.route_count(), 1);
}

#[test]
fn a_broken_tls_secret_is_reported_and_leaves_the_routes_serving() {
    let mut index = healthy_world();
    index.apply(mk_secret(
        "tls",
        &[("tls.crt", b"not pem"), ("tls.key", b"nope")],
    ));
    let mut spec = mk_policy_spec("idp", &["app.example.com"], Some(("web", 80)));
    spec.tls = Some(TlsConfig {
        secret_name: "tls".into(),
    });
    index.apply(mk_policy("app", 0, spec));
    let snapshot = index.build();
    assert_eq!(
        status_of(&snapshot, Kind::IapPolicy, "app").reason,
        "TlsSecretInvalid"
    );
    assert!(snapshot.table.certificates.is_empty());
    assert_eq!(upstreams(&snapshot, "app.example.com", "/").len(), 2);
}

fn mk_ingress(name: &str, yaml_spec: &str, annotations: &[(&str, &str)]) -> Resource {
    let spec: k8s_openapi::api::networking::v1::IngressSpec =
        serde_yaml::from_str(yaml_spec).expect("valid IngressSpec");
    let mut metadata = meta(name);
    if !annotations.is_empty() {
        metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    Resource::Ingress(Box::new(k8s_openapi::api::networking::v1::Ingress {
        metadata,
        spec: Some(spec),
        status: None,
    }))
}

#[test]
fn ingresses_are_served_under_the_policy_they_name_and_only_then() {
    let mut index = healthy_world();
    // A policy with no hosts and no backend of its own: Ingresses bring both.
    index.apply(mk_policy("guard", 0, mk_policy_spec("idp", &[], None)));
    let rules = r#"
ingressClassName: kube-iap
tls: [{hosts: [shop.test], secretName: shop-tls}]
rules:
  - host: shop.test
    http:
      paths:
        - {path: /cart, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
"#;
    index.apply(mk_ingress("shop", rules, &[(POLICY_ANNOTATION, "guard")]));
    index.apply(mk_ingress(
        "unguarded",
        &rules.replace("shop.test", "open.test"),
        &[],
    ));
    index.apply(mk_ingress(
        "dangling",
        &rules.replace("shop.test", "dangling.test"),
        &[(POLICY_ANNOTATION, "nonexistent")],
    ));
    index.apply(mk_ingress(
        "someone-elses",
        &rules
            .replace("kube-iap", "nginx")
            .replace("shop.test", "nginx.test"),
        &[(POLICY_ANNOTATION, "guard")],
    ));
    let snapshot = index.build();

    assert_eq!(
        upstreams(&snapshot, "shop.test", "/cart/items"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    let route = snapshot.table.route("shop.test", "/cart").unwrap();
    assert_eq!(route.policy, "apps/guard");
    assert!(snapshot.table.route("shop.test", "/").is_none());
    // Fail closed: no policy, no route.
    for host in ["open.test", "dangling.test", "nginx.test"] {
        assert!(snapshot.table.route(host, "/cart").is_none(), "{host}");
    }
    assert!(status_of(&snapshot, Kind::Ingress, "shop").ready);
    let unguarded = status_of(&snapshot, Kind::Ingress, "unguarded");
    assert_eq!(unguarded.reason, "PolicyAnnotationMissing");
    assert!(unguarded.message.contains(POLICY_ANNOTATION));
    assert_eq!(
        status_of(&snapshot, Kind::Ingress, "dangling").reason,
        "PolicyNotFound"
    );
    assert!(
        !snapshot
            .statuses
            .iter()
            .any(|status| status.key.name == "someone-elses"),
        "other classes are not ours to report on"
    );
    // The Ingress's TLS Secret is one the cluster source keeps.
    assert!(
        index
            .referenced_secrets()
            .contains(&ObjectKey::new(NS, "shop-tls"))
    );
    assert!(
        !index
            .referenced_secrets()
            .contains(&ObjectKey::new(NS, "nginx-tls"))
    );
}

#[test]
fn without_a_rate_limit_a_policy_gets_google_iaps_360000_per_minute() {
    let mut index = healthy_world();
    index.apply(mk_policy(
        "default",
        0,
        mk_policy_spec("idp", &["default.example.com"], Some(("web", 80))),
    ));
    // `rateLimit: {}` in YAML means the default too.
    let mut empty = mk_policy_spec("idp", &["empty.example.com"], Some(("web", 80)));
    empty.rate_limit = Some(serde_json::from_str("{}").expect("an empty rateLimit parses"));
    index.apply(mk_policy("empty", 1, empty));
    let mut tight = mk_policy_spec("idp", &["tight.example.com"], Some(("web", 80)));
    tight.rate_limit = Some(RateLimit {
        requests_per_minute: 5,
    });
    index.apply(mk_policy("tight", 2, tight));
    let snapshot = index.build();
    let limit = |host: &str| {
        snapshot
            .table
            .route(host, "/")
            .expect("route exists")
            .rate_limit
            .requests_per_minute
    };
    assert_eq!(limit("default.example.com"), 360_000);
    assert_eq!(limit("empty.example.com"), 360_000);
    assert_eq!(limit("tight.example.com"), 5);
}

#[test]
fn time_windows_are_read_as_rfc3339_with_offsets_and_bad_times_fail_the_policy_closed() {
    let window = |after: &str, before: &str| AccessRule {
        members: vec!["allUsers".into()],
        when: Some(AccessConditions {
            after: Some(after.into()),
            before: Some(before.into()),
            ..Default::default()
        }),
    };
    let mut index = healthy_world();
    let mut timed = mk_policy_spec("idp", &["timed.example.com"], Some(("web", 80)));
    // 2026-03-01T00:00:00Z is 1772323200; the offset puts `before` at 1772323200 + 3600.
    timed.access = vec![window("2026-03-01T00:00:00Z", "2026-03-01T03:00:00+02:00")];
    index.apply(mk_policy("timed", 0, timed));
    for (name, host, after) in [
        ("words", "words.example.com", "tomorrow"),
        ("no-zone", "nozone.example.com", "2026-03-01T00:00:00"),
    ] {
        let mut bad = mk_policy_spec("idp", &[host], Some(("web", 80)));
        bad.access = vec![window(after, "2026-03-02T00:00:00Z")];
        index.apply(mk_policy(name, 1, bad));
    }
    let snapshot = index.build();

    let route = snapshot
        .table
        .route("timed.example.com", "/")
        .expect("route");
    let allowed_at = |now: i64| {
        let facts = crate::model::RequestFacts {
            path: "/",
            method: "GET",
            client: "127.0.0.1".parse().expect("an address"),
            now,
        };
        matches!(
            route.access.evaluate(None, &facts),
            crate::model::Decision::Allow(_)
        )
    };
    let start = 1_772_323_200;
    assert!(!allowed_at(start - 1));
    assert!(allowed_at(start));
    assert!(allowed_at(start + 3599));
    assert!(!allowed_at(start + 3600), "the +02:00 offset is applied");

    for (name, host) in [
        ("words", "words.example.com"),
        ("no-zone", "nozone.example.com"),
    ] {
        let status = status_of(&snapshot, Kind::IapPolicy, name);
        assert_eq!(status.reason, "InvalidSpec", "{name}");
        assert!(
            status.message.contains("is not an RFC 3339 time"),
            "{}",
            status.message
        );
        assert_eq!(fail_closed_code(&snapshot, host, "/"), None);
    }
}

/// What a table serves, route by route, in an order that does not depend on hashing.
fn describe(snapshot: &Snapshot) -> Vec<String> {
    let mut routes: Vec<String> = snapshot
        .table
        .routes()
        .map(|route| {
            format!(
                "{}{} {} {:?} access={:?} sign_in={:?} identity={:?} limit={} tunnel={:?}",
                route.host,
                route.prefix,
                route.policy,
                route.action,
                route.access,
                route.sign_in.as_ref().map(|s| (
                    &s.client,
                    s.client.client_secret.expose(),
                    s.session_max_age
                )),
                route.backend_identity,
                route.rate_limit.requests_per_minute,
                route.tunnel,
            )
        })
        .collect();
    routes.sort();
    routes
}

/// One change to the index, named in the assertion that follows it.
type Change = Box<dyn Fn(&mut Index)>;

/// A build that reuses the previous build's compiled policies must serve and report exactly
/// what a build from scratch does, after every kind of change.
#[test]
fn a_build_reusing_compiled_policies_equals_a_build_from_scratch_after_every_change() {
    let mut index = healthy_world();
    index.apply(mk_secret("idp2-secret", &[("secret", b"other")]));
    index.apply(mk_client(
        "idp2",
        "client-2",
        Some(("idp2-secret", "secret")),
    ));
    index.apply(mk_service("api", &[(Some("http"), 80)], &[]));
    index.apply(mk_slice(
        "api",
        (Some("http"), 9090),
        &[("10.0.1.1", Some(true))],
    ));
    index.apply(mk_secret(
        "tls",
        &[("tls.crt", b"not pem"), ("tls.key", b"nope")],
    ));
    let policy = |name: &str, created: i64, client: &str, hosts: &[&str], backend| {
        mk_policy(name, created, mk_policy_spec(client, hosts, backend))
    };
    index.apply(policy(
        "first",
        0,
        "idp",
        &["shared.test"],
        Some(("web", 80)),
    ));
    let mut deeper = mk_policy_spec("idp", &["shared.test"], Some(("api", 80)));
    deeper.paths = vec!["/api".into()];
    index.apply(mk_policy("deeper", 1, deeper));
    index.apply(policy(
        "late",
        2,
        "idp",
        &["shared.test"],
        Some(("api", 80)),
    ));
    index.apply(policy(
        "other-client",
        3,
        "idp2",
        &["shared.test", "own.test"],
        Some(("web", 80)),
    ));
    index.apply(policy("annotated", 4, "idp", &["annotated.test"], None));
    let mut tls = mk_policy_spec("idp", &["tls.test"], Some(("web", 80)));
    tls.tls = Some(TlsConfig {
        secret_name: "tls".into(),
    });
    tls.tcp_forwarding = Some(TcpForwarding {
        members: vec!["allAuthenticatedUsers".into()],
        ports: vec![80],
    });
    index.apply(mk_policy("tls", 5, tls));
    index.apply(policy("guard", 6, "idp", &[], None));
    let rules = r#"
ingressClassName: kube-iap
tls: [{hosts: [shop.test], secretName: shop-tls}]
rules:
  - host: shop.test
    http:
      paths:
        - {path: /cart, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
"#;
    index.apply(mk_ingress("shop", rules, &[(POLICY_ANNOTATION, "guard")]));

    let mut denied = mk_policy_spec("idp", &["shared.test"], Some(("web", 80)));
    denied.access = vec![AccessRule {
        members: vec!["domain:example.com".into()],
        when: None,
    }];
    let changes: Vec<(&str, Change)> = vec![
        ("nothing", Box::new(|_| {})),
        (
            "a slice's readiness",
            Box::new(|index| {
                index.apply(mk_slice(
                    "web",
                    (Some("http"), 8080),
                    &[
                        ("10.0.0.1", Some(false)),
                        ("10.0.0.2", None),
                        ("10.0.0.3", Some(true)),
                    ],
                ))
            }),
        ),
        (
            "a new slice",
            Box::new(|index| {
                index.apply(mk_slice(
                    "web",
                    (Some("http"), 8080),
                    &[("10.0.0.9", Some(true))],
                ))
            }),
        ),
        (
            "a policy's access",
            Box::new(move |index| index.apply(mk_policy("first", 0, denied.clone()))),
        ),
        (
            "the oldest policy on a host deleted",
            Box::new(|index| index.delete(Kind::IapPolicy, &ObjectKey::new(NS, "first"))),
        ),
        (
            "it comes back",
            Box::new(|index| {
                index.apply(mk_policy(
                    "first",
                    0,
                    mk_policy_spec("idp", &["shared.test"], Some(("web", 80))),
                ))
            }),
        ),
        (
            "a client secret's value",
            Box::new(|index| index.apply(mk_secret("idp-secret", &[("secret", b"rotated")]))),
        ),
        (
            "a client's ID",
            Box::new(|index| {
                index.apply(mk_client(
                    "idp",
                    "client-1b",
                    Some(("idp-secret", "secret")),
                ))
            }),
        ),
        (
            "a client deleted",
            Box::new(|index| index.delete(Kind::OAuthClient, &ObjectKey::new(NS, "idp2"))),
        ),
        (
            "a Service annotated",
            Box::new(|index| {
                index.apply(mk_service(
                    "api",
                    &[(Some("http"), 80)],
                    &[(POLICY_ANNOTATION, "annotated")],
                ))
            }),
        ),
        (
            "the annotated Service's slice",
            Box::new(|index| {
                index.apply(mk_slice(
                    "api",
                    (Some("http"), 9090),
                    &[("10.0.1.2", Some(true))],
                ))
            }),
        ),
        (
            "the annotation removed",
            Box::new(|index| index.apply(mk_service("api", &[(Some("http"), 80)], &[]))),
        ),
        (
            "a TLS Secret fixed or broken",
            Box::new(|index| index.apply(mk_secret("tls", &[("tls.crt", b"still not pem")]))),
        ),
        (
            "an Ingress path",
            Box::new(move |index| {
                index.apply(mk_ingress(
                    "shop",
                    &rules.replace("/cart", "/basket"),
                    &[(POLICY_ANNOTATION, "guard")],
                ))
            }),
        ),
        (
            "the Ingress's TLS Secret",
            Box::new(|index| index.apply(mk_secret("shop-tls", &[("tls.crt", b"x")]))),
        ),
        (
            "slices relisted",
            Box::new(|index| {
                index.reset(
                    Kind::EndpointSlice,
                    [mk_slice(
                        "api",
                        (Some("http"), 9090),
                        &[("10.0.1.3", Some(true))],
                    )],
                )
            }),
        ),
        (
            "a backend Service deleted",
            Box::new(|index| index.delete(Kind::Service, &ObjectKey::new(NS, "web"))),
        ),
    ];
    for (what, change) in changes {
        change(&mut index);
        let reused = index.build();
        let fresh = index.clone().build();
        assert_eq!(describe(&reused), describe(&fresh), "after {what}");
        assert_eq!(reused.statuses, fresh.statuses, "after {what}");
    }
}

#[test]
fn a_client_no_policy_uses_says_it_has_not_been_checked_until_one_does() {
    let mut index = healthy_world();
    let snapshot = index.build();
    let unused = status_of(&snapshot, Kind::OAuthClient, "idp");
    assert_eq!(unused.reason, "NotInUse");
    assert!(
        unused.message.contains("not been checked"),
        "{}",
        unused.message
    );
    assert_eq!(unused.error_code, None);

    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    let snapshot = index.build();
    let used = status_of(&snapshot, Kind::OAuthClient, "idp");
    assert_eq!(used.reason, "Ready");
    assert!(
        !used.message.contains("not been checked"),
        "{}",
        used.message
    );
}

#[test]
fn an_endpoint_slice_relabelled_or_deleted_leaves_its_old_service() {
    let mut index = healthy_world();
    index.apply(mk_service("api", &[(Some("http"), 80)], &[]));
    index.apply(mk_policy(
        "app",
        0,
        mk_policy_spec("idp", &["app.example.com"], Some(("web", 80))),
    ));
    index.apply(mk_policy(
        "other",
        1,
        mk_policy_spec("idp", &["api.example.com"], Some(("api", 80))),
    ));
    // healthy_world's slice of `web` (three endpoints: named web-abc3), relabelled to `api`.
    let Resource::EndpointSlice(mut slice) = mk_slice(
        "api",
        (Some("http"), 8080),
        &[("10.0.0.9", Some(true)), ("x", None), ("y", Some(false))],
    ) else {
        unreachable!()
    };
    slice.metadata.name = Some("web-abc3".into());
    slice.endpoints.as_mut().unwrap().truncate(1);
    index.apply(Resource::EndpointSlice(slice));
    let snapshot = index.build();
    assert_eq!(
        upstreams(&snapshot, "api.example.com", "/"),
        ["10.0.0.9:8080"]
    );
    assert!(
        upstreams(&snapshot, "app.example.com", "/").is_empty(),
        "web has no endpoints left"
    );

    index.delete(Kind::EndpointSlice, &ObjectKey::new(NS, "web-abc3"));
    let snapshot = index.build();
    assert!(upstreams(&snapshot, "api.example.com", "/").is_empty());
}
