//! `kube-iap controller` against a scripted API server, through kube-rs: watched objects become
//! routes, statuses carry the error codes and are written only by the leader and only when they
//! change, an unreadable object is skipped, and an API outage changes nothing for traffic.

use std::time::Duration;

use kube_iap::controller::ClusterConfig;
use kube_iap::proxy::ProxyConfig;
use kube_iap::serve::{self, Running, ServeConfig, Source};
use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;
use crate::support::{backends, get, loopback, manifests, within};

async fn start_controller(api: &ApiServer, identity: &str) -> Running {
    if std::env::var_os("KUBE_IAP_TEST_LOG").is_some() {
        kube_iap::telemetry::init(kube_iap::telemetry::LogFormat::Text);
    }
    serve::start(ServeConfig {
        source: Source::Cluster(ClusterConfig {
            client: api.client(),
            watch_namespace: None,
            lease_namespace: "kube-iap".into(),
            lease_name: "kube-iap-leader".into(),
            identity: identity.into(),
            ingress_class: "kube-iap".into(),
            ingress_addresses: vec!["203.0.113.7".into()],
        }),
        http_addr: Some(loopback()),
        https_addr: None,
        admin_addr: loopback(),
        session_keys_secret: None,
        proxy: ProxyConfig {
            access_log: false,
            workers: 1,
            ..ProxyConfig::default()
        },
    })
    .await
    .expect("controller starts")
}

fn policy_with_client(name: &str, host: &str, client: &str, path: &str) -> String {
    format!(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: {name}, namespace: default, creationTimestamp: "2026-02-01T00:00:00Z"}}
spec:
  oauthClientRef: {{name: {client}}}
  hosts: ["{host}"]
  paths: ["{path}"]
  backend: {{service: web, port: 80}}
  access: [{{members: [allUsers]}}]
"#
    )
}

/// Every call the controller made is one `deploy/rbac.yaml` allows: the ClusterRole, or the
/// Role in the controller's namespace for its Lease.
fn assert_allowed_by_deploy_rbac(api: &ApiServer) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml"))
        .expect("deploy/rbac.yaml");
    let mut allowed = std::collections::BTreeSet::new();
    for document in crate::support::apiserver::yaml_documents(&text) {
        if !matches!(document["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in document["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                let group = match group.as_str().unwrap() {
                    "" => "core",
                    group => group,
                };
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        allowed.insert((
                            verb.as_str().unwrap().to_string(),
                            format!("{group}/{}", resource.as_str().unwrap()),
                        ));
                    }
                }
            }
        }
    }
    let calls: std::collections::BTreeSet<_> = api.calls().into_iter().collect();
    let denied: Vec<_> = calls.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "deploy/rbac.yaml does not allow {denied:?}"
    );
    // The scenario exercised the election and the status writer, not only the watches.
    for needed in [
        ("create", "coordination.k8s.io/leases"),
        ("patch", "kube-iap.io/iappolicies/status"),
        ("watch", "core/secrets"),
    ] {
        assert!(
            calls.contains(&(needed.0.to_string(), needed.1.to_string())),
            "{needed:?} not exercised"
        );
    }
}

/// A scripted API server holding the healthy OAuthClient `idp` and the Service `web`, whose
/// endpoint is `backend`.
async fn cluster_with_web(backend: std::net::SocketAddr) -> ApiServer {
    let api = ApiServer::start().await;
    api.put_yaml(&manifests::oauth_client());
    api.put_yaml(&manifests::service("web", backend.port()));
    api
}

fn last_status(api: &ApiServer, plural: &str, name: &str) -> Option<Value> {
    api.status_patches(plural, "default", name)
        .last()
        .map(|write| write.body.clone())
}

#[tokio::test]
async fn watched_objects_are_served_and_statuses_carry_each_code_once() {
    let backend = backends::echo("web").await;
    let api = cluster_with_web(backend).await;
    api.put_yaml(&manifests::policy(
        "open",
        "open.test",
        "web",
        &["allUsers"],
    ));
    // 13: the policy names an OAuthClient that does not exist.
    api.put_yaml(&policy_with_client("orphan", "orphan.test", "nobody", "/"));
    // 7: a client without a client ID.
    api.put_yaml(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: empty, namespace: default}
spec: {issuer: "http://127.0.0.1:1", clientId: ""}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: other, namespace: default}
spec: {issuer: "http://127.0.0.1:1", clientId: other, clientSecretRef: {name: idp-secret, key: client-secret}}
"#,
    );
    // 9: a newer policy on the same host with a different OAuth client.
    api.put_yaml(&policy_with_client("rival", "open.test", "other", "/rival"));
    let running = start_controller(&api, "replica-a").await;
    let proxy = running.http_addr.unwrap();

    within(10, "the watched policy to be served", || async {
        get(proxy, "open.test", "/hello", &[]).await.status == http::StatusCode::OK
    })
    .await;

    let code_of = |plural: &'static str, name: &'static str| {
        let api = api.clone();
        move || {
            last_status(&api, plural, name).and_then(|body| body["status"]["errorCode"].as_u64())
        }
    };
    for (plural, name, code) in [
        ("iappolicies", "orphan", 13),
        ("oauthclients", "empty", 7),
        ("iappolicies", "rival", 9),
        // The issuer refuses connections: discovery fails.
        ("oauthclients", "idp", 11),
    ] {
        let code_of = code_of(plural, name);
        within(15, &format!("{plural}/{name} to get code {code}"), || {
            let found = code_of();
            async move { found == Some(code) }
        })
        .await;
    }

    // The exact patch: server-side apply of the status subresource as field manager kube-iap.
    let patch = &api.status_patches("iappolicies", "default", "orphan")[0];
    assert!(
        patch.query.contains("fieldManager=kube-iap"),
        "{}",
        patch.query
    );
    assert!(patch.query.contains("force=true"), "{}", patch.query);
    assert_eq!(patch.body["apiVersion"], "kube-iap.io/v1alpha1");
    assert_eq!(patch.body["kind"], "IapPolicy");
    let condition = &patch.body["status"]["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("Error code 13:"),
        "{condition}"
    );
    assert_eq!(patch.body["status"]["observedGeneration"], 1);
    let healthy = last_status(&api, "iappolicies", "open").expect("open's status written");
    assert_eq!(healthy["status"]["conditions"][0]["status"], "True");
    assert!(healthy["status"].get("errorCode").is_none(), "{healthy}");
    let client = last_status(&api, "oauthclients", "idp").unwrap();
    let digest = client["status"]["clientSecretSha256"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(!client.to_string().contains("do-not-leak-this"));

    // Each transition is an Event on the object.
    let events: Vec<Value> = api
        .writes()
        .into_iter()
        .filter(|write| write.path.ends_with("/events"))
        .map(|write| write.body)
        .collect();
    assert!(
        events
            .iter()
            .any(|event| event["regarding"]["name"] == "orphan"
                && event["type"] == "Warning"
                && event["note"]
                    .as_str()
                    .unwrap()
                    .starts_with("Error code 13:")),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|event| event["regarding"]["name"] == "open"),
        "a new policy that is simply ready records no Event: {events:?}"
    );

    // Written once: the object now says it, so nothing is written again.
    let patches_before = api.status_patches("iappolicies", "default", "orphan").len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(patches_before, 1);
    assert_eq!(
        api.status_patches("iappolicies", "default", "orphan").len(),
        1
    );

    // A fix clears the code.
    api.put_yaml(&policy_with_client("orphan", "orphan.test", "idp", "/"));
    within(10, "the fixed policy to become ready", || {
        let body = last_status(&api, "iappolicies", "orphan").unwrap();
        async move { body["status"]["conditions"][0]["status"] == "True" }
    })
    .await;

    assert_allowed_by_deploy_rbac(&api);
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-iap",
            "kube-iap-leader",
        )
        .expect("the controller created its Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    running.shutdown().await;
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-iap",
            "kube-iap-leader",
        )
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released on shutdown: {lease}"
    );
}

#[tokio::test]
async fn only_the_leader_writes_and_a_replica_takes_over_an_abandoned_lease() {
    let api = ApiServer::start().await;
    api.put_yaml(&policy_with_client("orphan", "orphan.test", "nobody", "/"));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.put(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kube-iap-leader", "namespace": "kube-iap"},
        "spec": {"holderIdentity": "replica-that-died", "leaseDurationSeconds": 10,
                 "renewTime": now, "acquireTime": now, "leaseTransitions": 3}
    }));
    let running = start_controller(&api, "replica-b").await;
    let proxy = running.http_addr.unwrap();
    // Serving does not wait for leadership: the follower has its own table.
    within(10, "the follower to serve its table", || async {
        get(proxy, "orphan.test", "/", &[]).await.status != http::StatusCode::NOT_FOUND
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        api.status_patches("iappolicies", "default", "orphan")
            .is_empty(),
        "a follower wrote status"
    );
    // The holder never renews: within 10 s of its last renewal (+ one retry) the Lease is ours.
    within(15, "the follower to take over and write", || {
        let written = !api
            .status_patches("iappolicies", "default", "orphan")
            .is_empty();
        async move { written }
    })
    .await;
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-iap",
            "kube-iap-leader",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 4);
    running.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_object_is_skipped_and_an_api_outage_changes_nothing_for_traffic() {
    let backend = backends::echo("web").await;
    let api = cluster_with_web(backend).await;
    api.put_yaml(&manifests::policy("a", "a.test", "web", &["allUsers"]));
    api.put_yaml(&manifests::policy("b", "b.test", "web", &["allUsers"]));
    // The API server's schema validation would refuse this; a watch must survive it anyway.
    api.put(json!({
        "apiVersion": "kube-iap.io/v1alpha1", "kind": "IapPolicy",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"oauthClientRef": {"name": "idp"}, "hosts": "not-a-list"}
    }));
    let running = start_controller(&api, "replica-c").await;
    let (proxy, admin) = (running.http_addr.unwrap(), running.admin_addr);
    within(10, "both policies to be served", || async {
        get(proxy, "a.test", "/", &[]).await.status == http::StatusCode::OK
            && get(proxy, "b.test", "/", &[]).await.status == http::StatusCode::OK
    })
    .await;
    let report = get(admin, "admin", "/status", &[]).await.json();
    let errors = report["objectErrors"].as_array().expect("objectErrors");
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["name"], "bad");
    assert!(errors[0]["reason"].as_str().unwrap().contains("hosts"));
    within(10, "the unreadable policy's status", || {
        let body = last_status(&api, "iappolicies", "bad");
        async move {
            body.is_some_and(|body| body["status"]["conditions"][0]["reason"] == "InvalidObject")
        }
    })
    .await;

    // The API goes away. Meanwhile b is deleted, c created, and the history compacted, so the
    // watchers must relist when the API is back.
    api.set_down(true);
    api.delete("kube-iap.io/v1alpha1", "IapPolicy", "default", "b");
    api.put_yaml(&manifests::policy("c", "c.test", "web", &["allUsers"]));
    api.compact();
    let outage = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut requests = 0;
    while tokio::time::Instant::now() < outage {
        for host in ["a.test", "b.test"] {
            let reply = get(proxy, host, "/", &[]).await;
            assert_eq!(
                reply.status,
                http::StatusCode::OK,
                "{host} during the outage"
            );
            requests += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(requests > 20);
    assert_eq!(
        get(admin, "admin", "/readyz", &[]).await.status,
        http::StatusCode::OK
    );

    api.set_down(false);
    within(30, "the relist after the outage to apply", || async {
        get(proxy, "c.test", "/", &[]).await.status == http::StatusCode::OK
            && get(proxy, "b.test", "/", &[]).await.status == http::StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        get(proxy, "a.test", "/", &[]).await.status,
        http::StatusCode::OK
    );
    running.shutdown().await;
}

#[tokio::test]
async fn ingresses_of_our_class_are_served_under_their_policy_and_others_get_an_event() {
    let backend = backends::echo("web").await;
    let api = cluster_with_web(backend).await;
    api.put_yaml(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: guard, namespace: default}
spec:
  oauthClientRef: {name: idp}
  access: [{members: [allUsers]}]
"#,
    );
    let ingress = |name: &str, host: &str, annotations: &str| {
        format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}
spec:
  ingressClassName: kube-iap
  rules:
    - host: {host}
      http:
        paths:
          - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#
        )
    };
    api.put_yaml(&ingress("shop", "shop.test", "kube-iap.io/policy: guard"));
    api.put_yaml(&ingress("unguarded", "open.test", ""));
    let running = start_controller(&api, "replica-d").await;
    let proxy = running.http_addr.unwrap();

    within(10, "the Ingress to be served", || async {
        get(proxy, "shop.test", "/", &[]).await.status == http::StatusCode::OK
    })
    .await;
    assert_eq!(
        get(proxy, "open.test", "/", &[]).await.status,
        http::StatusCode::NOT_FOUND,
        "an Ingress without a policy is not served"
    );
    within(10, "the served Ingress to show the proxy's address", || {
        let object = api.get("networking.k8s.io/v1", "Ingress", "default", "shop");
        async move {
            object.is_some_and(|o| o["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.7")
        }
    })
    .await;
    within(
        10,
        "an Event saying why the other Ingress is not served",
        || {
            let found = api.writes().into_iter().any(|write| {
                write.path.ends_with("/events")
                    && write.body["regarding"]["kind"] == "Ingress"
                    && write.body["regarding"]["name"] == "unguarded"
                    && write.body["type"] == "Warning"
                    && write.body["note"]
                        .as_str()
                        .is_some_and(|note| note.contains("kube-iap.io/policy"))
            });
            async move { found }
        },
    )
    .await;
    assert!(
        api.get("networking.k8s.io/v1", "Ingress", "default", "unguarded")
            .unwrap()["status"]["loadBalancer"]
            .is_null(),
        "an Ingress that is not served gets no address"
    );
    assert_allowed_by_deploy_rbac(&api);
    running.shutdown().await;
}

/// The binary itself, as a Deployment runs it: `kube-iap controller` finds the cluster through
/// KUBECONFIG, serves the watched routes and reports ready.
#[tokio::test]
async fn the_controller_command_serves_a_cluster_found_through_kubeconfig() {
    let backend = backends::echo("web").await;
    let api = cluster_with_web(backend).await;
    api.put_yaml(&manifests::policy(
        "open",
        "open.test",
        "web",
        &["allUsers"],
    ));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (proxy, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args(["controller", "--no-https", "--no-access-log"])
        .args(["--pod-name", "binary-test", "--pod-namespace", "kube-iap"])
        .args(["--http-addr", &proxy.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kube-iap controller starts");
    within(20, "the controller command to listen", || async {
        tokio::net::TcpStream::connect(proxy).await.is_ok()
    })
    .await;
    within(20, "the controller command to serve the route", || async {
        get(proxy, "open.test", "/", &[]).await.status == http::StatusCode::OK
    })
    .await;
    assert_eq!(
        get(admin, "admin", "/readyz", &[]).await.status,
        http::StatusCode::OK
    );
    within(10, "the command's status writer to write", || {
        let written = last_status(&api, "iappolicies", "open").is_some();
        async move { written }
    })
    .await;
    child.kill().await.unwrap();
}
