//! Cluster mode: the watches feed the index (see [`crate::source::kube`]), every replica serves
//! from its own table, and the replica holding the leader Lease writes statuses and Events.

pub mod leader;
pub mod status_writer;

use std::sync::Arc;

use kube::runtime::events::Reporter;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::providers::Providers;
use crate::index::{GatewaySettings, ObjectKey};
use crate::metrics::Metrics;
use crate::publish::Published;
use crate::shutdown::until_stopped;
use crate::source::kube::ClusterSource;

/// How `kube-iap controller` talks to its cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub client: kube::Client,
    /// Watch only this namespace; every namespace when `None`.
    pub watch_namespace: Option<String>,
    /// Where the leader Lease lives (the controller's own namespace).
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease and in Events (the Pod name).
    pub identity: String,
    /// Ingresses of this IngressClass are served.
    pub ingress_class: String,
    /// Written to served Ingresses' `status.loadBalancer` and Gateways' `status.addresses`
    /// (IPs or hostnames); nothing when empty.
    pub ingress_addresses: Vec<String>,
    /// The ports kube-iap's Service exposes for HTTP and HTTPS: Gateway listeners on other
    /// ports are not served.
    pub gateway_ports: (i32, i32),
    /// How often Gateway API kinds whose CRDs are not installed are looked for again
    /// (`source::RECHECK_INTERVAL` unless a test needs it sooner).
    pub discovery_interval: std::time::Duration,
}

/// Starts the watches, the election and the status writer as tasks of `tasks`.
pub fn spawn(
    config: ClusterConfig,
    session_keys_secret: ObjectKey,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    providers: Arc<Providers>,
    tasks: &mut JoinSet<()>,
    stop: watch::Receiver<bool>,
) {
    let source = ClusterSource {
        client: config.client.clone(),
        namespace: config.watch_namespace.clone(),
        session_keys_secret,
        ingress_class: config.ingress_class.clone(),
        gateway: GatewaySettings {
            http_port: config.gateway_ports.0,
            https_port: config.gateway_ports.1,
            addresses: config.ingress_addresses.clone(),
        },
        discovery_interval: config.discovery_interval,
    };
    {
        let (published, metrics, stop) = (published.clone(), metrics.clone(), stop.clone());
        tasks.spawn(run_on_index_thread(source, published, metrics, stop));
    }
    let (leading_tx, leading) = watch::channel(false);
    let election = leader::LeaderElection::new(
        config.client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
    );
    tasks.spawn(election.run(leading_tx, stop.clone()));
    let writer = status_writer::StatusWriter {
        client: config.client,
        published,
        providers,
        metrics,
        ingress_addresses: config.ingress_addresses,
        reporter: Reporter {
            controller: "kube-iap".to_string(),
            instance: Some(config.identity),
        },
    };
    tasks.spawn(writer.run(leading, stop));
}

/// Runs the watch loop, and so every table build, on a thread of its own. Builds allocate and
/// free tens of megabytes at 10,000 objects; on the shared runtime they ran on whichever worker
/// thread was free, and each worker's allocator kept what it had freed for a while (about
/// 50 MiB more resident after a burst of changes). On one thread, the memory a build frees is
/// what the next build reuses, and what `allocator::release_freed_memory` hands back.
///
/// The thread ends with `stop`, or when this task is dropped (its runtime shutting down).
async fn run_on_index_thread(
    source: ClusterSource,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let (alive, dropped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name("kube-iap-index".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the index thread");
            runtime.block_on(async move {
                tokio::select! {
                    _ = source.run(published, metrics) => {}
                    _ = until_stopped(&mut stop) => {}
                    _ = dropped => {}
                }
            });
            let _ = done.send(());
        });
    if let Err(error) = started {
        tracing::error!(%error, "cannot start the index thread: no table will be built");
        return;
    }
    if finished.await.is_err() {
        // The thread ended without saying so: it panicked. The proxy keeps the last table.
        tracing::error!("the index thread stopped: the routing table is no longer updated");
    }
    drop(alive);
}
