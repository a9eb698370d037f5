//! Turns an [`Index`] into what the rest of the process reads: the routing table for the data
//! plane (swapped whole) and the status report for the admin port and the status writer.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use std::collections::HashMap;

use crate::api::DiscoveredEndpoints;
use crate::auth::providers::Providers;
use crate::error_codes::ErrorCode;
use crate::index::{ComputedStatus, Index, Kind, ObjectKey, Problem};
use crate::metrics::Metrics;
use crate::model::RoutingTable;
use crate::proxy::SharedTable;
use crate::source::files::ManifestError;
use crate::source::kube::ObjectError;

/// The computed status of every object. Rendered as JSON only when `/status` is asked for:
/// at 10,000 policies a rendered copy per published table cost memory and a build's worth of
/// time.
#[derive(Clone, Debug, Default)]
pub struct StatusReport {
    /// Increases with every published table.
    pub generation: u64,
    pub routes: usize,
    pub manifest_errors: Vec<ManifestError>,
    /// Objects in the cluster that could not be read (skipped).
    pub object_errors: Vec<ObjectError>,
    pub statuses: Vec<ComputedStatus>,
    pub published_at: Option<Time>,
}

/// What `/status` shows: every object's status subresource as it would be written in a
/// cluster, with what identity providers report folded in.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub generation: u64,
    pub routes: usize,
    pub objects: Vec<ObjectReport>,
    pub manifest_errors: Vec<ManifestError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub object_errors: Vec<ObjectError>,
}

impl StatusReport {
    /// The report as `/status` shows it, with what identity providers report folded into the
    /// OAuthClients' statuses: problems as error code 11, and the discovered endpoints.
    pub fn view(&self, findings: &ProviderFindings) -> StatusView {
        let now = self
            .published_at
            .clone()
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
        let objects = self
            .statuses_at_providers(findings)
            .map(|status| object_report(&status, &now))
            .collect();
        StatusView {
            generation: self.generation,
            routes: self.routes,
            objects,
            manifest_errors: self.manifest_errors.clone(),
            object_errors: self.object_errors.clone(),
        }
    }

    /// Every computed status with what was found at identity providers folded in (problems
    /// as code 11, discovered endpoints): what the status writer makes the cluster say.
    pub fn statuses_at_providers<'a>(
        &'a self,
        findings: &'a ProviderFindings,
    ) -> impl Iterator<Item = Cow<'a, ComputedStatus>> + 'a {
        // Only OAuthClients change; the thousands of policy statuses are lent, not copied.
        self.statuses.iter().map(|status| {
            if status.kind != Kind::OAuthClient {
                return Cow::Borrowed(status);
            }
            let name = status.key.to_string();
            let mut status = match findings.problems.get(&name) {
                Some(detail) => status.with_problem(&Problem::new(
                    "IdentityProviderProblem",
                    Some(ErrorCode::OAuthClientMisconfigured),
                    format!("{detail}."),
                )),
                None => status.clone(),
            };
            status.discovered = findings.endpoints.get(&name).cloned().map(Box::new);
            Cow::Owned(status)
        })
    }
}

/// What the identity providers of the current table's OAuthClients report, by OAuthClient
/// `namespace/name`.
#[derive(Debug, Default)]
pub struct ProviderFindings {
    pub problems: HashMap<String, String>,
    pub endpoints: HashMap<String, DiscoveredEndpoints>,
}

#[derive(Clone, Debug, Serialize)]
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
    /// The generation of the latest report, for whoever waits for changes (the status writer).
    published: tokio::sync::watch::Sender<u64>,
}

impl Published {
    pub fn new() -> Arc<Self> {
        Arc::new(Published {
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            report: ArcSwap::from_pointee(StatusReport::default()),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            published: tokio::sync::watch::Sender::new(0),
        })
    }

    /// What the identity providers of the current table's OAuthClients report.
    pub fn provider_findings(&self, providers: &Providers) -> ProviderFindings {
        let table = self.table.load();
        let mut findings = ProviderFindings::default();
        // Routes share their client's Arc: one pointer per client, however many routes.
        let mut seen = std::collections::HashSet::new();
        for route in table.routes() {
            let Some(sign_in) = &route.sign_in else {
                continue;
            };
            let client = &sign_in.client;
            if !seen.insert(Arc::as_ptr(client)) {
                continue;
            }
            if let Some(problem) = providers.problem(client) {
                findings.problems.insert(client.name.clone(), problem);
            }
            if let Some((authorization, token, jwks)) = providers.endpoints(&client.issuer) {
                findings.endpoints.insert(
                    client.name.clone(),
                    DiscoveredEndpoints {
                        authorization_endpoint: authorization,
                        token_endpoint: token,
                        jwks_uri: jwks,
                    },
                );
            }
        }
        findings
    }

    /// After status-only changes: the same table and report, with each status's view of what
    /// its object carries refreshed, so the status writer does not write again what is there.
    pub fn refresh_current_statuses(&self, index: &Index) {
        // Transition times stay those of the last build (`published_at`).
        let mut refreshed = StatusReport::clone(&self.report.load());
        index.record_current_statuses(&mut refreshed.statuses);
        let generation = refreshed.generation;
        self.report.store(Arc::new(refreshed));
        self.published.send_replace(generation);
    }

    /// Changes whenever a new table and report are published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Ready once the first table has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Builds and swaps in a new table and report (local mode).
    pub fn publish(&self, index: &Index, manifest_errors: Vec<ManifestError>, metrics: &Metrics) {
        self.publish_with(index, manifest_errors, Vec::new(), metrics);
    }

    /// Builds and swaps in a new table and report (cluster mode). An IapPolicy or OAuthClient
    /// that cannot be read gets a not-ready status of its own, so `kubectl get` shows why.
    pub fn publish_cluster(
        &self,
        index: &Index,
        object_errors: Vec<ObjectError>,
        metrics: &Metrics,
    ) {
        self.publish_with(index, Vec::new(), object_errors, metrics);
    }

    fn publish_with(
        &self,
        index: &Index,
        manifest_errors: Vec<ManifestError>,
        object_errors: Vec<ObjectError>,
        metrics: &Metrics,
    ) {
        let started = Instant::now();
        let mut snapshot = index.build();
        for error in &object_errors {
            if matches!(error.kind, Kind::IapPolicy | Kind::OAuthClient) {
                snapshot.statuses.push(ComputedStatus::from_problems(
                    error.kind,
                    ObjectKey::new(&error.namespace, &error.name),
                    None,
                    &[Problem::new(
                        "InvalidObject",
                        None,
                        format!(
                            "kube-iap cannot read this object, so it is not served: {}",
                            error.reason
                        ),
                    )],
                    String::new(),
                ));
            }
        }
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
        for status in snapshot.statuses.iter().filter(|status| !status.ready) {
            tracing::warn!(kind = status.kind.as_str(), object = %status.key, reason = %status.reason, message = %status.message, "not ready");
        }
        self.report.store(Arc::new(StatusReport {
            generation,
            routes,
            manifest_errors,
            object_errors,
            statuses: snapshot.statuses,
            published_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        }));
        self.ready.store(true, Ordering::Release);
        self.published.send_replace(generation);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The previous table and report were dropped above (unless a request still holds the
        // table), and the build's temporaries with them.
        let releasing = Instant::now();
        crate::allocator::release_freed_memory();
        tracing::info!(
            generation,
            routes,
            elapsed_ms,
            release_ms = releasing.elapsed().as_secs_f64() * 1000.0,
            "routing table published"
        );
    }
}

fn object_report(status: &ComputedStatus, now: &Time) -> ObjectReport {
    ObjectReport {
        kind: status.kind,
        namespace: status.key.namespace.clone(),
        name: status.key.name.clone(),
        status: status.subresource(now.clone()),
    }
}
