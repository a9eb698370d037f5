//! The controller at scale: 10,000 IapPolicies, 10,000 Services and their EndpointSlices.
//!
//! 1. The index alone, on synthetic objects: a full table build from scratch, and a build after
//!    one policy changed (which reuses every other compiled policy); median and worst of several.
//! 2. The watch path, on a real kube-apiserver and etcd (`scripts/testbed.sh`): the objects are
//!    created through the API, then `kube-iap controller` runs as its own process against it
//!    (KUBECONFIG); after the first table and the status writer's first round, each of a series
//!    of policy changes is timed from the API server accepting it until the proxy answers on the
//!    changed host. The controller's resident memory is read from /proc.
//!
//!    A bare API server refuses loopback EndpointSlice addresses, so the 10,000 Services have
//!    slices with pod-range addresses that nothing ever connects to; the hosts the bench asks for
//!    (a `ready` policy, and each changed policy) go to an `ExternalName` Service to 127.0.0.1.
//!
//! 3. The index alone again with as many HTTPRoutes on one Gateway, protected by one IapPolicy.
//!
//! 4. The watch path again with as many HTTPRoutes, when asked for with `routes`: each change
//!    points a route at a new hostname.
//!
//! `cargo bench --bench controller_scale [-- POLICIES CHANGES [policies|routes]]` (defaults
//! 10000, 100 and policies; 0 changes skips the API server).

// The same allocator as the kube-iap binary, so the index figures are the controller's.
#[global_allocator]
static ALLOCATOR: kube_iap::allocator::Allocator = kube_iap::allocator::Allocator;

#[path = "../tests/integration/support/testbed.rs"]
#[allow(dead_code)]
mod testbed;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_iap::index::{Index, Resource};
use serde_json::{Value, json};

fn policy(i: usize, host: &str) -> Value {
    json!({
        "apiVersion": "kube-iap.io/v1alpha1", "kind": "IapPolicy",
        "metadata": {"name": format!("p{i}"), "namespace": "bench", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"oauthClientRef": {"name": "idp"}, "hosts": [host],
                 "backend": {"service": format!("s{i}"), "port": 80},
                 "access": [{"members": ["allUsers"]}]}
    })
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i}"), "namespace": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

/// An EndpointSlice of Service `s{i}` with a pod-range address: read and routed, never dialled.
fn slice(i: usize) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{i}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [format!("10.244.{}.{}", i / 250, i % 250 + 1)],
                       "conditions": {"ready": true}}]
    })
}

/// The Service the hosts the bench asks for are served from: the backend on 127.0.0.1.
fn local_service(backend_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "local", "namespace": "bench"},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                 "ports": [{"name": "http", "port": backend_port}]}
    })
}

/// Policy `name` on `host`, served from the `local` Service.
fn local_policy(name: &str, host: &str, backend_port: u16) -> Value {
    json!({
        "apiVersion": "kube-iap.io/v1alpha1", "kind": "IapPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"oauthClientRef": {"name": "idp"}, "hosts": [host],
                 "backend": {"service": "local", "port": backend_port},
                 "access": [{"members": ["allUsers"]}]}
    })
}

/// An HTTPRoute `name` on `host` of Gateway `web`, served from the `local` Service.
fn local_route(name: &str, host: &str, backend_port: u16) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": [host],
                 "rules": [{"backendRefs": [{"name": "local", "port": backend_port}]}]}})
}

/// What the watch path is measured with: IapPolicies with hosts, or HTTPRoutes on one Gateway
/// (protected by one IapPolicy attached to it).
#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Policies,
    HttpRoutes,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Policies => "IapPolicies",
            Scenario::HttpRoutes => "HTTPRoutes",
        }
    }

    fn world(self, count: usize) -> Vec<Value> {
        match self {
            Scenario::Policies => world(count),
            Scenario::HttpRoutes => gateway_world(count),
        }
    }

    /// The object named `name` (one of the world's, or a new one), now serving `host` from the
    /// local backend.
    fn serving(self, name: &str, host: &str, backend_port: u16) -> Value {
        match self {
            Scenario::Policies => local_policy(name, host, backend_port),
            Scenario::HttpRoutes => local_route(name, host, backend_port),
        }
    }

    /// The name of the world's object number `i`.
    fn name(self, i: usize) -> String {
        match self {
            Scenario::Policies => format!("p{i}"),
            Scenario::HttpRoutes => format!("r{i}"),
        }
    }

    /// Where the host an object serves is written: `spec.hosts[0]` or `spec.hostnames[0]`.
    fn host_of(self, object: &Value) -> Option<String> {
        let hosts = match self {
            Scenario::Policies => &object["spec"]["hosts"],
            Scenario::HttpRoutes => &object["spec"]["hostnames"],
        };
        hosts[0].as_str().map(str::to_string)
    }

    fn api_resource(self) -> kube::api::ApiResource {
        match self {
            Scenario::Policies => kube::api::ApiResource::erase::<kube_iap::api::IapPolicy>(&()),
            Scenario::HttpRoutes => {
                kube::api::ApiResource::erase::<kube_iap::api::gateway::HTTPRoute>(&())
            }
        }
    }
}

fn client() -> Vec<Value> {
    vec![
        json!({"apiVersion": "kube-iap.io/v1alpha1", "kind": "OAuthClient",
               "metadata": {"name": "idp", "namespace": "bench"},
               "spec": {"issuer": "http://127.0.0.1:1", "clientId": "bench",
                        "clientSecretRef": {"name": "idp", "key": "secret"}}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "idp", "namespace": "bench"},
               "data": {"secret": "c2VjcmV0"}}),
    ]
}

fn world(policies: usize) -> Vec<Value> {
    let mut objects = client();
    for i in 0..policies {
        objects.push(policy(i, &format!("app{i}.bench.test")));
        objects.push(service(i));
        objects.push(slice(i));
    }
    objects
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn index_build(policies: usize) {
    let mut index = Index::default();
    for object in world(policies) {
        let resource = match object["kind"].as_str().unwrap() {
            "IapPolicy" => Resource::IapPolicy(serde_json::from_value(object).unwrap()),
            "OAuthClient" => Resource::OAuthClient(serde_json::from_value(object).unwrap()),
            "Service" => Resource::Service(serde_json::from_value(object).unwrap()),
            "EndpointSlice" => Resource::EndpointSlice(serde_json::from_value(object).unwrap()),
            "Secret" => Resource::Secret(serde_json::from_value(object).unwrap()),
            other => unreachable!("{other}"),
        };
        index.apply(resource);
    }
    measure_builds(&mut index, &format!("{policies} policies"), |round| {
        let host = format!("rebuilt{round}.bench.test");
        let changed = Resource::IapPolicy(serde_json::from_value(policy(round, &host)).unwrap());
        (changed, host)
    });
}

/// Full builds from scratch (a clone of the index has nothing to reuse), then builds after one
/// object changes (`change(round)` gives it and the host it now serves), printed as median and
/// worst of `BUILDS` (default 7) each.
fn measure_builds(index: &mut Index, what: &str, change: impl Fn(usize) -> (Resource, String)) {
    let builds: usize = std::env::var("BUILDS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(7);
    let mut full = Vec::new();
    let mut routes = 0;
    for _ in 0..builds {
        let fresh = index.clone();
        let started = Instant::now();
        let snapshot = fresh.build();
        full.push(started.elapsed());
        routes = snapshot.table.route_count();
    }
    index.build();
    let mut after_change = Vec::new();
    for round in 0..builds {
        let (changed, host) = change(round);
        index.apply(changed);
        let started = Instant::now();
        let snapshot = index.build();
        after_change.push(started.elapsed());
        assert!(
            snapshot.table.route(&host, "/").is_some(),
            "the change is built"
        );
    }
    full.sort();
    after_change.sort();
    println!(
        "index: {what} + services + slices -> {routes} routes; full build median {}, worst {} (target <= 100 ms); after one change median {}, worst {}",
        ms(full[full.len() / 2]),
        ms(full[full.len() - 1]),
        ms(after_change[after_change.len() / 2]),
        ms(after_change[after_change.len() - 1])
    );
}

/// `routes` HTTPRoutes on one Gateway of kube-iap's, each to its own Service, all protected by
/// one IapPolicy attached to the Gateway.
fn gateway_world(routes: usize) -> Vec<Value> {
    let mut objects = client();
    objects.push(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "kube-iap"},
        "spec": {"controllerName": "kube-iap.io/gateway-controller"}}),
    );
    objects.push(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "bench", "generation": 1},
        "spec": {"gatewayClassName": "kube-iap",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}),
    );
    objects.push(json!({"apiVersion": "kube-iap.io/v1alpha1", "kind": "IapPolicy",
        "metadata": {"name": "gateway", "namespace": "bench", "generation": 1},
        "spec": {"oauthClientRef": {"name": "idp"}, "access": [{"members": ["allUsers"]}],
                 "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}]}}));
    for i in 0..routes {
        objects.push(http_route(i, &format!("app{i}.bench.test")));
        objects.push(service(i));
        objects.push(slice(i));
    }
    objects
}

fn http_route(i: usize, host: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("r{i}"), "namespace": "bench", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": [host],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"name": format!("s{i}"), "port": 80}]}]}})
}

/// An object as local mode reads it.
fn resource(object: Value) -> Resource {
    let manifests = kube_iap::source::files::parse(&[(
        std::path::PathBuf::from("bench"),
        serde_yaml::to_string(&object).unwrap(),
    )]);
    manifests
        .resources
        .into_iter()
        .next()
        .expect("a readable object")
}

/// The same figures for `routes` HTTPRoutes instead of IapPolicies.
fn gateway_index_build(routes: usize) {
    let mut index = Index::default();
    for object in gateway_world(routes) {
        index.apply(resource(object));
    }
    measure_builds(&mut index, &format!("{routes} HTTPRoutes"), |round| {
        let host = format!("rebuilt{round}.bench.test");
        (resource(http_route(round, &host)), host)
    });
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn status_of(client: &HttpClient, uri: &str, host: &str) -> u16 {
    let request = http::Request::get(uri)
        .header("host", host)
        .body(http_body_util::Empty::new())
        .unwrap();
    match client.request(request).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Creates `objects` through the API server, `WRITERS` at a time, as `kubectl apply` of a large
/// folder would; namespaced into `bench`.
async fn create_all(testbed: &Arc<testbed::Testbed>, objects: Vec<Value>) {
    const WRITERS: usize = 16;
    let yaml: Vec<String> = objects
        .iter()
        .map(|object| serde_yaml::to_string(object).unwrap())
        .collect();
    let chunks: Vec<Vec<String>> = yaml
        .chunks(yaml.len().div_ceil(WRITERS))
        .map(<[String]>::to_vec)
        .collect();
    let mut writers = tokio::task::JoinSet::new();
    for chunk in chunks {
        let testbed = Arc::clone(testbed);
        writers.spawn(async move { testbed.apply("bench", &chunk.join("---\n")).await });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer finished");
    }
}

/// The sum of the controller's `kube_iap_status_writes_total`.
async fn status_writes(client: &HttpClient, admin: &str) -> u64 {
    let request = http::Request::get(format!("{admin}metrics"))
        .header("host", "admin")
        .body(http_body_util::Empty::new())
        .unwrap();
    let Ok(response) = client.request(request).await else {
        return 0;
    };
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.map(|b| b.to_bytes());
    let text = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
    text.lines()
        .filter(|line| line.starts_with("kube_iap_status_writes_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

async fn watch_path(scenario: Scenario, policies: usize, changes: usize) {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            if let Ok((mut stream, _)) = backend.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        }
    });
    eprintln!("starting a real kube-apiserver and etcd (scripts/testbed.sh)");
    let testbed = Arc::new(testbed::Testbed::start());
    let crds: String = kube_iap::api::crds_yaml();
    testbed.apply("", &crds).await;
    if scenario == Scenario::HttpRoutes {
        testbed.install_gateway_api();
    }
    testbed
        .apply(
            "",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n",
        )
        .await;
    let mut objects = scenario.world(policies);
    objects.push(local_service(backend_port));
    objects.push(scenario.serving("ready", "ready.bench.test", backend_port));
    let listed = objects.len();
    let creating = Instant::now();
    create_all(&testbed, objects).await;
    eprintln!(
        "created {listed} objects through the API server in {:.1} s",
        creating.elapsed().as_secs_f64()
    );

    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http_port, admin_port) = (free_port(), free_port());
    eprintln!(
        "controller: proxy 127.0.0.1:{http_port}, admin 127.0.0.1:{admin_port}, API {}",
        testbed.server
    );
    let log_path = std::env::temp_dir().join("kube-iap-controller-bench.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let controller = Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args(["controller", "--no-https", "--no-access-log"])
        .args(["--pod-name", "bench", "--pod-namespace", "bench"])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .env("KUBECONFIG", &testbed.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("kube-iap controller starts");
    let mut controller = KillOnDrop(controller);
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let proxy = format!("http://127.0.0.1:{http_port}/");
    let admin = format!("http://127.0.0.1:{admin_port}/");
    // A relist is applied whole, so the first route served means the first table is live.
    while status_of(&client, &proxy, "ready.bench.test").await != 200 {
        if started.elapsed() > Duration::from_secs(300)
            || controller.0.try_wait().unwrap().is_some()
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the controller never served the table:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_table = started.elapsed();
    let rss_first = rss_mib(controller.0.id());
    eprintln!(
        "first table after {}; waiting for the status writer's first round",
        ms(first_table)
    );
    // Let the status writer's first round (one patch per object, each echoed back) finish, so
    // the changes below are measured on a quiet controller, as in steady state.
    let mut writes = status_writes(&client, &admin).await;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) || writes < policies as u64 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = status_writes(&client, &admin).await;
        if now != writes {
            writes = now;
            quiet_since = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the status writer never settled ({writes} writes)"
        );
    }
    let settled = started.elapsed();
    eprintln!(
        "{writes} status writes done after {:.1} s; timing {changes} changes",
        settled.as_secs_f64()
    );
    let rss_synced = rss_mib(controller.0.id());
    // A watcher of the bench's own sees each change too: how long the API server itself takes
    // to deliver it, apart from what the controller does with it.
    let delivered = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    {
        use futures_util::StreamExt;
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(testbed.client().await, "bench", &scenario.api_resource());
        let delivered = Arc::clone(&delivered);
        let mut events = kube::runtime::watcher(api, Default::default()).boxed();
        tokio::spawn(async move {
            // Not `while let Some(Ok(Apply))`: the initial list's events would end the loop.
            while let Some(event) = events.next().await {
                if let Ok(kube::runtime::watcher::Event::Apply(object)) = event {
                    if let Some(host) = scenario.host_of(&object.data) {
                        let mut delivered = delivered.lock().unwrap();
                        delivered.entry(host).or_insert_with(Instant::now);
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await; // its initial list
    }
    let mut delivery = Vec::with_capacity(changes);
    let mut times = Vec::with_capacity(changes);
    let mut api_times = Vec::with_capacity(changes);
    for change in 0..changes {
        let host = format!("changed{change}.bench.test");
        let mut changed = scenario.serving(&scenario.name(change), &host, backend_port);
        changed["metadata"]["namespace"] = json!("bench");
        let yaml = serde_yaml::to_string(&changed).unwrap();
        let sent_at = Instant::now();
        testbed.apply("bench", &yaml).await;
        let accepted_at = Instant::now();
        api_times.push(accepted_at - sent_at);
        while status_of(&client, &proxy, &host).await != 200 {
            assert!(
                accepted_at.elapsed() < Duration::from_secs(10),
                "change {change} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(accepted_at.elapsed());
        if let Some(at) = delivered.lock().unwrap().get(&host) {
            delivery.push(at.saturating_duration_since(accepted_at));
        }
    }
    let rss_after = rss_mib(controller.0.id());
    // And once the burst is over: what stays resident, apart from what was in flight.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_settled = rss_mib(controller.0.id());
    drop(controller);
    times.sort();
    api_times.sort();
    delivery.sort();
    let label = scenario.label();
    println!(
        "watch path, {policies} {label} (real kube-apiserver): first table after {} (list of {listed} objects); status writer's first round ({writes} writes) done after {:.1} s",
        ms(first_table),
        settled.as_secs_f64()
    );
    println!(
        "watch path: one change, API server accepted to proxy serving, {changes} changes: p50 {}, p99 {}, max {} (target p99 <= 100 ms); the API server's own apply took p50 {}, p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times[times.len() - 1]),
        ms(percentile(&api_times, 0.5)),
        ms(percentile(&api_times, 0.99))
    );
    if !delivery.is_empty() {
        println!(
            "watch path: the API server delivered each change to a watcher {} after accepting it at p50, {} at p99 ({} seen)",
            ms(percentile(&delivery, 0.5)),
            ms(percentile(&delivery, 0.99)),
            delivery.len()
        );
    }
    println!(
        "controller resident memory: {rss_first:.0} MiB at the first table, {rss_synced:.0} MiB after the status round, {rss_after:.0} MiB right after the changes, {rss_settled:.0} MiB 5 s later (target <= 150 MB)"
    );
}

/// The controller process, stopped however the bench ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // As the binary does, so the index figures are measured on the same kind of pages.
    kube_iap::allocator::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let policies = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let changes = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let scenario = match args.get(2).map(String::as_str) {
        None | Some("policies") => Scenario::Policies,
        Some("routes") => Scenario::HttpRoutes,
        Some(other) => panic!("the watch path runs with `policies` or `routes`, not {other:?}"),
    };
    index_build(policies);
    gateway_index_build(policies);
    if changes == 0 {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(watch_path(scenario, policies, changes));
}
