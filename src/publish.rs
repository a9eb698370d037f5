//! Turns an [`Index`] into what the rest of the process reads: the routing table for the data
//! plane (swapped whole) and the status report for the admin port and the status writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use std::collections::HashMap;

use crate::error_codes::ErrorCode;
use crate::index::{ComputedStatus, Index, Kind, Problem};
use crate::metrics::Metrics;
use crate::model::RoutingTable;
use crate::proxy::SharedTable;
use crate::source::files::ManifestError;

/// The computed status of every object, as `/status` shows it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Increases with every published table.
    pub generation: u64,
    pub routes: usize,
    pub objects: Vec<ObjectReport>,
    pub manifest_errors: Vec<ManifestError>,
    /// What `objects` was rendered from, so problems found later can be folded in.
    #[serde(skip)]
    pub statuses: Vec<ComputedStatus>,
    #[serde(skip)]
    pub published_at: Option<Time>,
}

impl StatusReport {
    /// The report with problems found at identity providers (by OAuthClient `namespace/name`)
    /// folded into those OAuthClients' statuses: error code 11.
    pub fn with_provider_problems(&self, problems: &HashMap<String, String>) -> StatusReport {
        let now = self
            .published_at
            .clone()
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
        let objects = self
            .statuses
            .iter()
            .map(|status| {
                let problem = (status.kind == Kind::OAuthClient)
                    .then(|| problems.get(&status.key.to_string()))
                    .flatten();
                match problem {
                    Some(detail) => object_report(
                        &status.with_problem(&Problem::new(
                            "IdentityProviderProblem",
                            Some(ErrorCode::OAuthClientMisconfigured),
                            format!("{detail}."),
                        )),
                        &now,
                    ),
                    None => object_report(status, &now),
                }
            })
            .collect();
        StatusReport {
            generation: self.generation,
            routes: self.routes,
            objects,
            manifest_errors: self.manifest_errors.clone(),
            statuses: Vec::new(),
            published_at: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ObjectReport {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The status subresource exactly as it would be written in a cluster.
    pub status: serde_json::Value,
}

pub struct Published {
    pub table: SharedTable,
    pub report: ArcSwap<StatusReport>,
    ready: AtomicBool,
    generation: AtomicU64,
}

impl Published {
    pub fn new() -> Arc<Self> {
        Arc::new(Published {
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            report: ArcSwap::from_pointee(StatusReport::default()),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    /// Ready once the first table has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Builds and swaps in a new table and report.
    pub fn publish(&self, index: &Index, manifest_errors: Vec<ManifestError>, metrics: &Metrics) {
        let started = Instant::now();
        let snapshot = index.build();
        metrics.table_build.observe(started.elapsed().as_secs_f64());
        for (kind, count) in index.counts() {
            metrics
                .objects
                .with_label_values(&[kind.as_str()])
                .set(count as i64);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let routes = snapshot.table.route_count();
        self.table.store(Arc::new(snapshot.table));
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        self.report.store(Arc::new(StatusReport {
            generation,
            routes,
            objects: snapshot
                .statuses
                .iter()
                .map(|status| object_report(status, &now))
                .collect(),
            manifest_errors,
            statuses: snapshot.statuses.clone(),
            published_at: Some(now),
        }));
        self.ready.store(true, Ordering::Release);
        for status in snapshot.statuses.iter().filter(|status| !status.ready) {
            tracing::warn!(kind = status.kind.as_str(), object = %status.key, reason = %status.reason, message = %status.message, "not ready");
        }
        tracing::info!(
            generation,
            routes,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "routing table published"
        );
    }
}

fn object_report(status: &ComputedStatus, now: &Time) -> ObjectReport {
    let value = match status.kind {
        Kind::OAuthClient => serde_json::to_value(status.to_client_status(now.clone())),
        _ => serde_json::to_value(status.to_policy_status(now.clone())),
    };
    ObjectReport {
        kind: status.kind,
        namespace: status.key.namespace.clone(),
        name: status.key.name.clone(),
        status: value.expect("statuses serialize to JSON"),
    }
}
