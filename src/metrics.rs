//! Prometheus metrics, served on the admin port. Labels never carry user data: routes are named by
//! their IapPolicy, never by path or host.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    /// Requests answered, by route (IapPolicy `namespace/name`, `-` when nothing matched) and status.
    pub requests: IntCounterVec,
    /// Time until the upstream's response headers arrived, by route.
    pub upstream_latency: HistogramVec,
    /// Time to build one routing table.
    pub table_build: Histogram,
    /// Objects the index holds, by kind.
    pub objects: IntGaugeVec,
    /// Manifest documents that could not be read.
    pub manifest_errors: IntCounter,
    /// Failed list or watch calls to the Kubernetes API, by kind.
    pub watch_errors: IntCounterVec,
    /// Status patches, by kind and outcome (`ok`, `error`).
    pub status_writes: IntCounterVec,
    /// 1 while this replica holds the leader Lease (and writes status).
    pub leader: prometheus::IntGauge,
    pub rate_limited: IntCounterVec,
    pub tunnels_open: prometheus::IntGauge,
    /// Bytes through tunnels, by direction (`to_backend`, `to_client`).
    pub tunnel_bytes: IntCounterVec,
    /// Tunnel ends, by close code (`1000` for a normal end).
    pub tunnel_closes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kube_iap_requests_total",
                "Requests answered, by route and HTTP status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "kube_iap_upstream_latency_seconds",
                "Time from forwarding a request to receiving the upstream's response headers.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let table_build = Histogram::with_opts(
            HistogramOpts::new(
                "kube_iap_table_build_seconds",
                "Time to build a routing table.",
            )
            .buckets(vec![
                0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .expect("valid metric");
        let objects = IntGaugeVec::new(
            Opts::new("kube_iap_objects", "Objects in the index, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let manifest_errors = IntCounter::new(
            "kube_iap_manifest_errors_total",
            "Manifest documents that could not be read (local mode).",
        )
        .expect("valid metric");
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "kube_iap_watch_errors_total",
                "Failed list or watch calls to the Kubernetes API, by kind (the last table keeps serving).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let status_writes = IntCounterVec::new(
            Opts::new(
                "kube_iap_status_writes_total",
                "Status subresource patches, by kind and outcome.",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let leader = prometheus::IntGauge::new(
            "kube_iap_leader",
            "1 while this replica holds the leader Lease and writes status.",
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "kube_iap_rate_limited_total",
                "Requests refused with 429, by route (policy) or \"sign-in\" for the per-address limit.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let tunnels_open =
            prometheus::IntGauge::new("kube_iap_tunnels_open", "TCP tunnels open now.")
                .expect("valid metric");
        let tunnel_bytes = IntCounterVec::new(
            Opts::new(
                "kube_iap_tunnel_bytes_total",
                "Bytes carried by TCP tunnels, by direction.",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let tunnel_closes = IntCounterVec::new(
            Opts::new(
                "kube_iap_tunnel_closes_total",
                "TCP tunnels ended, by WebSocket close code (1000: a normal end).",
            ),
            &["code"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(rate_limited.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tunnels_open.clone()),
            Box::new(tunnel_bytes.clone()),
            Box::new(tunnel_closes.clone()),
            Box::new(requests.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(table_build.clone()),
            Box::new(objects.clone()),
            Box::new(manifest_errors.clone()),
            Box::new(watch_errors.clone()),
            Box::new(status_writes.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            upstream_latency,
            table_build,
            objects,
            manifest_errors,
            watch_errors,
            status_writes,
            leader,
            rate_limited,
            tunnels_open,
            tunnel_bytes,
            tunnel_closes,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding of gathered metrics cannot fail")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
