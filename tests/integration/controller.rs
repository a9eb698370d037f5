//! `kube-iap controller` against a real kube-apiserver and etcd (`support::testbed`): watched
//! objects become routes; statuses carry the error codes by server-side apply as field manager
//! `kube-iap`, with `observedGeneration` and an Event per transition; the chart's RBAC is enough
//! when the controller runs with its ServiceAccount's own token; a replica takes over from a
//! leader that died; an API pause, a CRD upgrade that leaves an unreadable object behind and a
//! compacted history change nothing for traffic.
//!
//! A bare API server refuses loopback addresses in EndpointSlices, so backends on 127.0.0.1 are
//! reached through `ExternalName` Services, whose port is the backend's own.

use std::net::SocketAddr;
use std::time::Duration;

use kube_iap::controller::ClusterConfig;
use kube_iap::proxy::ProxyConfig;
use kube_iap::serve::{self, Running, ServeConfig, Source};
use serde_json::Value;

use crate::support::relay::Relay;
use crate::support::testbed::{self, Testbed};
use crate::support::{backends, get, loopback, within};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub(crate) async fn start_controller(
    client: kube::Client,
    namespace: &str,
    lease_namespace: &str,
    identity: &str,
) -> Running {
    if std::env::var_os("KUBE_IAP_TEST_LOG").is_some() {
        kube_iap::telemetry::init(kube_iap::telemetry::LogFormat::Text);
    }
    serve::start(ServeConfig {
        source: Source::Cluster(Box::new(ClusterConfig {
            client,
            watch_namespace: Some(namespace.into()),
            lease_namespace: lease_namespace.into(),
            lease_name: "kube-iap-leader".into(),
            identity: identity.into(),
            ingress_class: "kube-iap".into(),
            ingress_addresses: vec!["203.0.113.7".into()],
            gateway_ports: (80, 443),
            // Soon, so a test can install the Gateway API CRDs after the start and wait.
            discovery_interval: std::time::Duration::from_secs(1),
        })),
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

/// The healthy OAuthClient `idp` (its issuer refuses connections, so its status says 11) with its
/// Secret, and the Service `web` reaching `backend`.
pub(crate) fn client_and_service(backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {{name: idp}}
spec:
  issuer: http://127.0.0.1:1
  clientId: test-client
  clientSecretRef: {{name: idp-secret, key: client-secret}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp-secret}}
stringData: {{client-secret: do-not-leak-this}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports: [{{name: http, port: {port}}}]
"#,
        port = backend.port()
    )
}

fn policy(name: &str, host: &str, client: &str, path: &str, backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {{name: {name}}}
spec:
  oauthClientRef: {{name: {client}}}
  hosts: ["{host}"]
  paths: ["{path}"]
  backend: {{service: web, port: {port}}}
  access: [{{members: [allUsers]}}]
"#,
        port = backend.port()
    )
}

/// A namespace of the shared server holding the OAuthClient `idp`, the Service `web` to a new
/// echo backend, and the policy `open` serving it on `open.test` to everyone.
async fn namespace_serving_open(testbed: &Testbed, prefix: &str) -> (String, SocketAddr) {
    let namespace = testbed.namespace(prefix).await;
    let backend = backends::echo("web").await;
    testbed
        .apply(&namespace, &client_and_service(backend))
        .await;
    testbed
        .apply(
            &namespace,
            &policy("open", "open.test", "idp", "/", backend),
        )
        .await;
    (namespace, backend)
}

async fn status_of(testbed: &Testbed, namespace: &str, kind: &str, name: &str) -> Value {
    testbed
        .get(namespace, "kube-iap.io/v1alpha1", kind, name)
        .await
        .map(|object| object["status"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_for_code(testbed: &Testbed, namespace: &str, kind: &str, name: &str, code: u64) {
    within(20, &format!("{kind}/{name} to get code {code}"), || async {
        status_of(testbed, namespace, kind, name).await["errorCode"].as_u64() == Some(code)
    })
    .await;
}

async fn wait_until_ready(testbed: &Testbed, namespace: &str, kind: &str, name: &str) {
    within(20, &format!("{kind}/{name} to be ready"), || async {
        status_of(testbed, namespace, kind, name).await["conditions"][0]["status"] == "True"
    })
    .await;
}

/// The install's RBAC (`deploy/rbac.yaml`, which a chart test keeps equal to the chart's) in the
/// namespace `kube-iap`, and a kubeconfig with a token the API server issued to its
/// ServiceAccount.
pub(crate) async fn service_account_client(
    testbed: &Testbed,
    dir: &std::path::Path,
) -> kube::Client {
    testbed
        .apply(
            "",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-iap}\n",
        )
        .await;
    let rbac = std::fs::read_to_string(format!("{ROOT}/deploy/rbac.yaml")).expect("rbac.yaml");
    testbed.apply("kube-iap", &rbac).await;
    let token = testbed.service_account_token("kube-iap", "kube-iap").await;
    let kubeconfig = dir.join("service-account.kubeconfig");
    testbed.write_kubeconfig(&kubeconfig, &testbed.server, &token);
    testbed.client_from(&kubeconfig).await
}

#[tokio::test]
async fn statuses_events_and_ingresses_as_the_charts_service_account_on_a_real_api_server() {
    let testbed = testbed::shared();
    let (namespace, backend) = namespace_serving_open(testbed, "statuses").await;
    // 13: the policy names an OAuthClient that does not exist.
    testbed
        .apply(
            &namespace,
            &policy("orphan", "orphan.test", "nobody", "/", backend),
        )
        .await;
    // 7: a client without a client ID; 9: a policy on open.test with a different client.
    testbed
        .apply(
            &namespace,
            r#"apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: empty}
spec: {issuer: "http://127.0.0.1:1", clientId: ""}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: other}
spec: {issuer: "http://127.0.0.1:1", clientId: other, clientSecretRef: {name: idp-secret, key: client-secret}}
"#,
        )
        .await;
    testbed
        .apply(
            &namespace,
            &policy("rival", "open.test", "other", "/rival", backend),
        )
        .await;
    let ingress = |name: &str, host: &str, annotations: &str| {
        format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, annotations: {{{annotations}}}}}
spec:
  ingressClassName: kube-iap
  rules:
    - host: {host}
      http:
        paths:
          - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: {port}}}}}}}}}
"#,
            port = backend.port()
        )
    };
    testbed
        .apply(
            &namespace,
            &ingress("shop", "shop.test", "kube-iap.io/policy: open"),
        )
        .await;
    testbed
        .apply(&namespace, &ingress("unguarded", "unguarded.test", ""))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let client = service_account_client(testbed, dir.path()).await;
    let running = start_controller(client, &namespace, "kube-iap", "replica-a").await;
    let proxy = running.http_addr.unwrap();

    within(
        20,
        "the watched policy and Ingress to be served",
        || async {
            get(proxy, "open.test", "/hello", &[]).await.status == http::StatusCode::OK
                && get(proxy, "shop.test", "/", &[]).await.status == http::StatusCode::OK
        },
    )
    .await;
    assert_eq!(
        get(proxy, "unguarded.test", "/", &[]).await.status,
        http::StatusCode::NOT_FOUND,
        "an Ingress without a policy is not served"
    );
    for (kind, name, code) in [
        ("IapPolicy", "orphan", 13),
        ("OAuthClient", "empty", 7),
        ("IapPolicy", "rival", 9),
        // The issuer refuses connections: discovery fails.
        ("OAuthClient", "idp", 11),
    ] {
        wait_for_code(testbed, &namespace, kind, name, code).await;
    }

    // Server-side apply of the status subresource, as field manager kube-iap.
    let orphan = testbed
        .get(&namespace, "kube-iap.io/v1alpha1", "IapPolicy", "orphan")
        .await
        .unwrap();
    let managers = orphan["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        managers.iter().any(|entry| entry["manager"] == "kube-iap"
            && entry["operation"] == "Apply"
            && entry["subresource"] == "status"),
        "{managers:?}"
    );
    let condition = &orphan["status"]["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("Error code 13:"),
        "{condition}"
    );
    assert_eq!(
        orphan["status"]["observedGeneration"],
        orphan["metadata"]["generation"]
    );
    wait_until_ready(testbed, &namespace, "IapPolicy", "open").await;
    let open = status_of(testbed, &namespace, "IapPolicy", "open").await;
    assert!(open.get("errorCode").is_none(), "{open}");
    let client = status_of(testbed, &namespace, "OAuthClient", "idp").await;
    assert_eq!(client["clientSecretSha256"].as_str().unwrap().len(), 64);
    assert!(!client.to_string().contains("do-not-leak-this"));

    // The served Ingress shows the proxy's address; the other one gets a Warning saying why.
    within(
        20,
        "the served Ingress to show the proxy's address",
        || async {
            testbed
                .get(&namespace, "networking.k8s.io/v1", "Ingress", "shop")
                .await
                .is_some_and(|o| o["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.7")
        },
    )
    .await;
    let events = testbed.events(&namespace).await;
    let warned = |kind: &str, name: &str, text: &str| {
        events.iter().any(|event| {
            event["regarding"]["kind"] == kind
                && event["regarding"]["name"] == name
                && event["type"] == "Warning"
                && event["note"]
                    .as_str()
                    .is_some_and(|note| note.contains(text))
        })
    };
    assert!(
        warned("IapPolicy", "orphan", "Error code 13:"),
        "{events:?}"
    );
    assert!(
        warned("Ingress", "unguarded", "kube-iap.io/policy"),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|event| event["regarding"]["name"] == "open"),
        "a new policy that is simply ready records no Event: {events:?}"
    );
    assert!(
        testbed
            .get(&namespace, "networking.k8s.io/v1", "Ingress", "unguarded")
            .await
            .unwrap()["status"]["loadBalancer"]
            .get("ingress")
            .is_none(),
        "an Ingress that is not served gets no address"
    );

    // A fix is a new generation: the code clears and observedGeneration follows.
    testbed
        .apply(
            &namespace,
            &policy("orphan", "orphan.test", "idp", "/", backend),
        )
        .await;
    wait_until_ready(testbed, &namespace, "IapPolicy", "orphan").await;
    let orphan = testbed
        .get(&namespace, "kube-iap.io/v1alpha1", "IapPolicy", "orphan")
        .await
        .unwrap();
    assert_eq!(orphan["metadata"]["generation"], 2);
    assert_eq!(orphan["status"]["observedGeneration"], 2);
    assert!(orphan["status"].get("errorCode").is_none(), "{orphan}");

    let lease = testbed
        .get(
            "kube-iap",
            "coordination.k8s.io/v1",
            "Lease",
            "kube-iap-leader",
        )
        .await
        .expect("the controller created its Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    running.shutdown().await;
    let lease = testbed
        .get(
            "kube-iap",
            "coordination.k8s.io/v1",
            "Lease",
            "kube-iap-leader",
        )
        .await
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released on shutdown: {lease}"
    );
}

/// Two `kube-iap controller` processes, as two replicas of the Deployment run them (KUBECONFIG,
/// `--namespace`, `--pod-namespace` for the Lease): both serve, only the leader writes, and when
/// the leader is killed the other takes over within the lease duration.
#[tokio::test]
async fn a_replica_takes_over_statuses_when_the_leader_is_killed() {
    let testbed = testbed::shared();
    let (namespace, backend) = namespace_serving_open(testbed, "replicas").await;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let replica = |name: &str| {
        let (proxy, admin) = (free_port(), free_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-iap"))
            .args(["controller", "--no-https", "--no-access-log"])
            .args(["--namespace", &namespace, "--pod-namespace", &namespace])
            .args(["--pod-name", name])
            .args(["--http-addr", &proxy.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .env("KUBECONFIG", &testbed.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kube-iap controller starts");
        (child, proxy, admin)
    };
    let holder = || async {
        testbed
            .get(
                &namespace,
                "coordination.k8s.io/v1",
                "Lease",
                "kube-iap-leader",
            )
            .await
            .map(|lease| lease["spec"]["holderIdentity"].clone())
    };

    let listening = |addr: SocketAddr| async move {
        within(30, "the replica to listen", || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    };
    let (mut first, first_proxy, first_admin) = replica("replica-1");
    listening(first_proxy).await;
    within(30, "the first replica to serve and lead", || async {
        get(first_proxy, "open.test", "/", &[]).await.status == http::StatusCode::OK
            && holder().await == Some("replica-1".into())
    })
    .await;
    assert_eq!(
        get(first_admin, "admin", "/readyz", &[]).await.status,
        http::StatusCode::OK
    );
    wait_until_ready(testbed, &namespace, "IapPolicy", "open").await;
    let (_second, second_proxy, _) = replica("replica-2");
    listening(second_proxy).await;
    within(30, "the second replica to serve", || async {
        get(second_proxy, "open.test", "/", &[]).await.status == http::StatusCode::OK
    })
    .await;

    // A policy that only a leader would report on, created after the leader is gone.
    first.start_kill().expect("SIGKILL");
    first.wait().await.unwrap();
    let killed = std::time::Instant::now();
    testbed
        .apply(
            &namespace,
            &policy("orphan", "orphan.test", "nobody", "/", backend),
        )
        .await;
    wait_for_code(testbed, &namespace, "IapPolicy", "orphan", 13).await;
    assert_eq!(holder().await, Some("replica-2".into()));
    let took = killed.elapsed();
    let budget = kube_iap::controller::leader::LEASE_DURATION
        + kube_iap::controller::leader::RETRY
        + Duration::from_secs(3);
    assert!(took <= budget, "took over after {took:?}");
    assert_eq!(
        get(second_proxy, "open.test", "/", &[]).await.status,
        http::StatusCode::OK
    );
}

/// A CRD that accepted anything (as an older version might have), a policy stored under it that
/// the current CRD would refuse, then the current CRDs installed over it.
async fn cluster_with_an_unreadable_policy(testbed: &Testbed, namespace: &str) {
    testbed
        .apply(
            "",
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: iappolicies.kube-iap.io}
spec:
  group: kube-iap.io
  names: {kind: IapPolicy, plural: iappolicies, singular: iappolicy, listKind: IapPolicyList}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#,
        )
        .await;
    testbed.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/iappolicies.kube-iap.io",
    ]);
    within(20, "the loose CRD to be served", || async {
        testbed
            .try_apply(
                namespace,
                "apiVersion: kube-iap.io/v1alpha1\nkind: IapPolicy\nmetadata: {name: bad}\n\
                 spec: {oauthClientRef: {name: idp}, hosts: not-a-list}\n",
            )
            .await
            .iter()
            .all(Result::is_ok)
    })
    .await;
    testbed.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &format!("{ROOT}/crds/"),
    ]);
}

#[tokio::test]
async fn an_api_pause_an_unreadable_object_and_a_compacted_history_change_nothing_for_traffic() {
    // Paused, restarted and given other CRDs: a server of this test's own.
    let testbed = Testbed::start();
    let namespace = testbed.namespace("outage").await;
    cluster_with_an_unreadable_policy(&testbed, &namespace).await;
    let backend = backends::echo("web").await;
    testbed
        .apply(&namespace, &client_and_service(backend))
        .await;
    for (name, host) in [("a", "a.test"), ("b", "b.test")] {
        testbed
            .apply(&namespace, &policy(name, host, "idp", "/", backend))
            .await;
    }
    // The controller reaches the API server through a relay the test can cut.
    let api_addr: SocketAddr = testbed
        .server
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let relay = Relay::start(api_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("relayed.kubeconfig");
    testbed.write_kubeconfig(
        &kubeconfig,
        &format!("https://{}", relay.addr),
        &testbed.admin_token(),
    );
    let client = testbed.client_from(&kubeconfig).await;
    let running = start_controller(client, &namespace, &namespace, "replica-c").await;
    let (proxy, admin) = (running.http_addr.unwrap(), running.admin_addr);
    let serves = |host: &'static str| async move {
        get(proxy, host, "/", &[]).await.status == http::StatusCode::OK
    };
    within(20, "both policies to be served", || async {
        serves("a.test").await && serves("b.test").await
    })
    .await;

    // The unreadable policy is skipped, and says why on /status and on its own status.
    let report = get(admin, "admin", "/status", &[]).await.json();
    let errors = report["objectErrors"].as_array().expect("objectErrors");
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["name"], "bad");
    assert!(
        errors[0]["reason"].as_str().unwrap().contains("hosts"),
        "{report}"
    );
    within(20, "the unreadable policy's status", || async {
        status_of(&testbed, &namespace, "IapPolicy", "bad").await["conditions"][0]["reason"]
            == "InvalidObject"
    })
    .await;

    // A 60 s pause of the API server: every request is served, and /readyz stays ready.
    testbed.pause();
    let outage = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut requests = 0;
    while tokio::time::Instant::now() < outage {
        for host in ["a.test", "b.test"] {
            let reply = get(proxy, host, "/", &[]).await;
            assert_eq!(
                reply.status,
                http::StatusCode::OK,
                "{host} during the pause"
            );
            requests += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(admin, "admin", "/readyz", &[]).await.status,
        http::StatusCode::OK
    );
    testbed.resume();
    testbed
        .apply(&namespace, &policy("c", "c.test", "idp", "/", backend))
        .await;
    within(30, "a change after the pause to be applied", || {
        serves("c.test")
    })
    .await;
    assert!(requests > 200, "{requests} requests during the pause");

    // The controller loses the API; meanwhile b is deleted and d created, etcd's history is
    // compacted and the API server restarted, so the watches' resource versions are gone (410)
    // and they must relist. Until that relist is complete, b keeps being served.
    relay.cut();
    testbed
        .delete(&namespace, "kube-iap.io/v1alpha1", "IapPolicy", "b")
        .await;
    testbed
        .apply(&namespace, &policy("d", "d.test", "idp", "/", backend))
        .await;
    testbed.compact();
    testbed.restart();
    for _ in 0..20 {
        assert!(
            serves("a.test").await && serves("b.test").await,
            "while cut off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.restore();
    within(60, "the relist after the compaction to apply", || async {
        assert!(serves("a.test").await, "a.test during the relist");
        serves("d.test").await
            && get(proxy, "b.test", "/", &[]).await.status == http::StatusCode::NOT_FOUND
    })
    .await;
    running.shutdown().await;
}
