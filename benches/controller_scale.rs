//! The controller at scale: 10,000 IapPolicies, 10,000 Services and their EndpointSlices.
//!
//! 1. The index alone, on synthetic objects: a full table build from scratch, and a build after
//!    one policy changed (which reuses every other compiled policy); median and worst of several.
//! 2. The watch path: a scripted API server holds the objects; `kube-iap controller` runs as its
//!    own process against it (KUBECONFIG); after the first table, each of a series of policy
//!    changes is timed from the API server accepting it until the proxy answers on the changed
//!    host. The controller's resident memory is read from /proc.
//!
//! `cargo bench --bench controller_scale [-- POLICIES CHANGES]` (defaults 10000 and 100).

// The same allocator as the kube-iap binary, so the index figures are the controller's.
#[global_allocator]
static ALLOCATOR: kube_iap::allocator::Allocator = kube_iap::allocator::Allocator;

#[path = "../tests/integration/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;

use std::process::Command;
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

fn slice(i: usize, backend_port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{i}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend_port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
    })
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

fn world(policies: usize, backend_port: u16) -> Vec<Value> {
    let mut objects = client();
    for i in 0..policies {
        objects.push(policy(i, &format!("app{i}.bench.test")));
        objects.push(service(i));
        objects.push(slice(i, backend_port));
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
    for object in world(policies, 8080) {
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
    let builds: usize = std::env::var("BUILDS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(7);
    // From scratch: a clone of the index has no compiled policies to reuse.
    let mut full = Vec::new();
    let mut routes = 0;
    for _ in 0..builds {
        let fresh = index.clone();
        let started = Instant::now();
        let snapshot = fresh.build();
        full.push(started.elapsed());
        routes = snapshot.table.route_count();
    }
    // After one policy changes: the other compiled policies are reused.
    index.build();
    let mut after_change = Vec::new();
    for round in 0..builds {
        let host = format!("rebuilt{round}.bench.test");
        let changed = Resource::IapPolicy(serde_json::from_value(policy(round, &host)).unwrap());
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
        "index: {policies} policies + services + slices -> {routes} routes; full build median {}, worst {} (target <= 100 ms); after one change median {}, worst {}",
        ms(full[full.len() / 2]),
        ms(full[full.len() - 1]),
        ms(after_change[after_change.len() / 2]),
        ms(after_change[after_change.len() - 1])
    );
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn status_of(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    uri: &str,
    host: &str,
) -> u16 {
    let request = http::Request::get(uri)
        .header("host", host)
        .body(http_body_util::Empty::new())
        .unwrap();
    match client.request(request).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn watch_path(policies: usize, changes: usize) {
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
    let api = apiserver::ApiServer::start().await;
    for object in world(policies, backend_port) {
        api.put(object);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let http_port = {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let admin_port = {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    eprintln!(
        "controller: proxy 127.0.0.1:{http_port}, admin 127.0.0.1:{admin_port}, API {}",
        api.addr
    );
    let log_path = std::env::temp_dir().join("kube-iap-controller-bench.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let controller = Command::new(env!("CARGO_BIN_EXE_kube-iap"))
        .args([
            "controller",
            "--no-https",
            "--no-access-log",
            "--pod-name",
            "bench",
        ])
        .args([
            "--pod-namespace",
            "bench",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
        ])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("kube-iap controller starts");
    let mut controller = KillOnDrop(controller);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let proxy = format!("http://127.0.0.1:{http_port}/");
    let last_host = format!("app{}.bench.test", policies - 1);
    while status_of(&client, &proxy, &last_host).await != 200 {
        if started.elapsed() > Duration::from_secs(300)
            || controller.0.try_wait().unwrap().is_some()
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the controller never served the table:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_table = started.elapsed();
    eprintln!(
        "first table after {}; waiting for the status writer to settle",
        ms(first_table)
    );
    // Let the status writer's first round (one patch per object, each echoed back) finish, so
    // the changes below are measured on a quiet controller, as in steady state.
    let mut quiet_since = Instant::now();
    // Lease renewals are writes too, every 2 s; only status patches count here.
    let status_writes = || {
        api.writes()
            .iter()
            .filter(|write| write.path.ends_with("/status"))
            .count()
    };
    let mut writes = status_writes();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = status_writes();
        if now != writes {
            writes = now;
            quiet_since = Instant::now();
        }
    }
    let rss_synced = rss_mib(controller.0.id());
    eprintln!(
        "settled after {} status writes; timing {changes} changes",
        writes
    );
    let mut times = Vec::with_capacity(changes);
    for change in 0..changes {
        let host = format!("changed{change}.bench.test");
        let changed_at = Instant::now();
        api.put(policy(change, &host));
        while status_of(&client, &proxy, &host).await != 200 {
            assert!(
                changed_at.elapsed() < Duration::from_secs(10),
                "change {change} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(changed_at.elapsed());
    }
    let rss_after = rss_mib(controller.0.id());
    drop(controller);
    times.sort();
    println!(
        "watch path: first table after {} (list of {} objects, {} status writes)",
        ms(first_table),
        policies * 3 + 2,
        writes
    );
    println!(
        "watch path: one policy change to the proxy, {changes} changes: p50 {}, p99 {}, max {} (target p99 <= 100 ms)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times[times.len() - 1])
    );
    println!(
        "controller resident memory: {rss_synced:.0} MiB after the first table, {rss_after:.0} MiB after the changes (target <= 150 MB)"
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
    index_build(policies);
    if changes == 0 {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(watch_path(policies, changes));
}
