//! Writes each IapPolicy's and OAuthClient's computed status to its status subresource, with
//! server-side apply under the field manager `kube-iap`, and records an Event when an object
//! becomes ready or not ready or its error code changes.
//!
//! Only the leader writes. A status is written only when it differs from what the object
//! already says (so a new leader does not rewrite ten thousand identical statuses) and from
//! what this replica last sent (so a write is not repeated before the watch reports it back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;

use crate::auth::providers::Providers;
use crate::index::{ComputedStatus, Kind, ObjectKey};
use crate::metrics::Metrics;
use crate::publish::Published;
use crate::shutdown::until_stopped;
use crate::source::kube::api_resource;

pub const FIELD_MANAGER: &str = "kube-iap";
/// Provider problems appear without a new table; look at them this often.
const RECHECK: Duration = Duration::from_secs(10);

pub struct StatusWriter {
    pub client: kube::Client,
    pub published: Arc<Published>,
    pub providers: Arc<Providers>,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    /// Written to served Ingresses' `status.loadBalancer`; nothing when empty.
    pub ingress_addresses: Vec<String>,
}

/// What was last sent for an object (its [`ComputedStatus::shown_digest`]: at 10,000 objects a
/// full copy of each was megabytes) and when. A write the watch has not reported back within
/// [`ECHO_WAIT`] is sent again: someone else may have overwritten it.
type Sent = HashMap<(Kind, ObjectKey), (u64, Instant)>;
const ECHO_WAIT: Duration = Duration::from_secs(30);

impl StatusWriter {
    pub async fn run(self, mut leading: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let mut published = self.published.subscribe();
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let mut sent = Sent::new();
        loop {
            if *leading.borrow_and_update() {
                self.metrics.leader.set(1);
                self.write_changed(&recorder, &mut sent).await;
            } else {
                self.metrics.leader.set(0);
                // A later term starts from what the objects say, not from this term's memory.
                sent.clear();
            }
            tokio::select! {
                _ = published.changed() => {}
                _ = leading.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = until_stopped(&mut stop) => return,
            }
        }
    }

    async fn write_changed(&self, recorder: &Recorder, sent: &mut Sent) {
        let report = self.published.report.load_full();
        let findings = self.published.provider_findings(&self.providers);
        for status in report.statuses_at_providers(&findings) {
            if status.kind == Kind::Ingress {
                self.write_ingress(recorder, sent, status.into_owned())
                    .await;
                continue;
            }
            let id = (status.kind, status.key.clone());
            let just_sent = sent
                .get(&id)
                .is_some_and(|(last, at)| same(last, &status) && at.elapsed() < ECHO_WAIT);
            if status.is_current() || just_sent {
                continue;
            }
            match self.patch(&status).await {
                Ok(()) => {
                    self.count(status.kind, "ok");
                    if is_transition(&status) {
                        self.record_event(recorder, &status).await;
                    }
                    sent.insert(id, (status.shown_digest(), Instant::now()));
                }
                Err(error) => {
                    // Retried on the next publish or recheck.
                    self.count(status.kind, "error");
                    tracing::warn!(kind = status.kind.as_str(), object = %status.key, %error, "cannot write status");
                }
            }
        }
    }

    /// Ingresses have no conditions: an Event says why one is not served, and a served one
    /// shows the proxy's address in `status.loadBalancer` (for `kubectl get ingress` and
    /// external-dns).
    async fn write_ingress(&self, recorder: &Recorder, sent: &mut Sent, status: ComputedStatus) {
        let id = (Kind::Ingress, status.key.clone());
        let previous = sent.get(&id).map(|(last, _)| last);
        let changed = previous.is_none_or(|last| !same(last, &status));
        if changed && (!status.ready || previous.is_some()) {
            self.record_event(recorder, &status).await;
        }
        let desired: Vec<String> = if status.ready {
            self.ingress_addresses.clone()
        } else {
            Vec::new()
        };
        let current = status
            .current
            .as_ref()
            .map(|current| current.load_balancer.clone())
            .unwrap_or_default();
        let echo_pending = !changed
            && sent
                .get(&id)
                .is_some_and(|(_, at)| at.elapsed() < ECHO_WAIT);
        if self.ingress_addresses.is_empty() || desired == current || echo_pending {
            if changed {
                sent.insert(id, (status.shown_digest(), Instant::now()));
            }
            return;
        }
        let entries: Vec<serde_json::Value> = desired
            .iter()
            .map(|address| match address.parse::<std::net::IpAddr>() {
                Ok(_) => serde_json::json!({"ip": address}),
                Err(_) => serde_json::json!({"hostname": address}),
            })
            .collect();
        let load_balancer = serde_json::json!({"loadBalancer": {"ingress": entries}});
        match self
            .apply_status(Kind::Ingress, &status.key, load_balancer)
            .await
        {
            Ok(_) => {
                self.count(Kind::Ingress, "ok");
                sent.insert(id, (status.shown_digest(), Instant::now()));
            }
            Err(error) => {
                self.count(Kind::Ingress, "error");
                tracing::warn!(ingress = %status.key, %error, "cannot write the Ingress's load balancer status");
            }
        }
    }

    fn count(&self, kind: Kind, outcome: &str) {
        self.metrics
            .status_writes
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
    }

    async fn patch(&self, status: &ComputedStatus) -> Result<(), kube::Error> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        if status.kind.is_gateway_route() {
            return self.write_route_parents(status, now).await;
        }
        self.apply_status(status.kind, &status.key, status.subresource(now))
            .await
    }

    /// A route's `status.parents` is one list shared by every controller its parents
    /// belong to, replaced whole on each write: kube-iap's entries are swapped in among the
    /// others' as they are now, and the write is refused (and retried later) if the route
    /// changed since it was read.
    async fn write_route_parents(
        &self,
        status: &ComputedStatus,
        now: Time,
    ) -> Result<(), kube::Error> {
        let resource = api_resource(status.kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &status.key.namespace, &resource);
        let current = api.get_status(&status.key.name).await?;
        let ours = status
            .api_status_body_against(&now, Some(&current.data["status"]))
            .unwrap_or_default();
        let mut parents: Vec<serde_json::Value> = current.data["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parent| parent["controllerName"] != crate::api::gateway::GATEWAY_CONTROLLER)
            .cloned()
            .collect();
        parents.extend(ours["parents"].as_array().into_iter().flatten().cloned());
        let body = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"parents": parents},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&status.key.name, &params, &Patch::Merge(&body))
            .await
            .map(drop)
    }

    /// Server-side apply of an object's status subresource as field manager `kube-iap`.
    ///
    /// An object stored before its CRD's schema tightened (a string where a list now is) cannot
    /// be typed for server-side apply at all, and that is exactly the object whose status must
    /// say it is invalid: its status then goes as a merge patch that replaces the whole status.
    async fn apply_status(
        &self,
        kind: Kind,
        key: &ObjectKey,
        status: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let resource = api_resource(kind);
        let api: Api<DynamicObject> = match kind {
            Kind::GatewayClass => Api::all_with(self.client.clone(), &resource),
            _ => Api::namespaced_with(self.client.clone(), &key.namespace, &resource),
        };
        let body = serde_json::json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&key.name, &params, &Patch::Apply(&body))
            .await
        {
            Err(kube::Error::Api(refusal)) if cannot_be_typed(&refusal) => {
                let body = serde_json::json!({"status": replacing(kind, &body["status"])});
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                api.patch_status(&key.name, &params, &Patch::Merge(&body))
                    .await
                    .map(drop)
            }
            result => result.map(drop),
        }
    }

    async fn record_event(&self, recorder: &Recorder, status: &ComputedStatus) {
        let resource = api_resource(status.kind);
        let reference = ObjectReference {
            api_version: Some(resource.api_version),
            kind: Some(resource.kind),
            // Cluster-scoped objects (GatewayClasses) have none.
            namespace: Some(status.key.namespace.clone()).filter(|ns| !ns.is_empty()),
            name: Some(status.key.name.clone()),
            uid: status.uid.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: if status.ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: status.reason.clone(),
            note: Some(truncate(&status.message, 1000)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(object = %status.key, %error, "cannot record an Event");
        }
    }
}

/// The API server's answer when the stored object does not fit the schema's types, so no
/// server-side apply to it can be computed ("failed to create typed patch object").
fn cannot_be_typed(refusal: &kube::core::Status) -> bool {
    refusal.code == 500 && refusal.message.contains("typed")
}

/// `status` as a JSON merge patch that replaces the whole status: every field of the kind's
/// status schema that `status` leaves out is set to null, so nothing an earlier status said stays.
fn replacing(kind: Kind, status: &serde_json::Value) -> serde_json::Value {
    let schema = match kind {
        Kind::OAuthClient => schemars::schema_for!(crate::api::OAuthClientStatus),
        Kind::IapPolicy => schemars::schema_for!(crate::api::IapPolicyStatus),
        // Built-in kinds (an Ingress's load balancer) always fit their schema.
        _ => return status.clone(),
    };
    let mut patch = status.clone();
    if let (Some(fields), Some(properties)) = (
        patch.as_object_mut(),
        schema.get("properties").and_then(|p| p.as_object()),
    ) {
        for name in properties.keys() {
            fields
                .entry(name.clone())
                .or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// Whether `status` shows what was sent as `sent` (a [`ComputedStatus::shown_digest`]): equal
/// in everything the subresource shows, on the same object (a deleted and recreated object has
/// a new uid and no status yet).
fn same(sent: &u64, status: &ComputedStatus) -> bool {
    *sent == status.shown_digest()
}

/// Whether the status is worth an Event: it changed readiness or code, or it is an object's
/// first status and reports a problem. A new object that is simply ready gets none: at 10,000
/// new policies that was 10,000 Events for the API server, and as many held in the recorder's
/// cache for its series TTL.
fn is_transition(status: &ComputedStatus) -> bool {
    if Kind::GATEWAY_API.contains(&status.kind) {
        // Their statuses have no single readiness to compare: a Warning when a problem is
        // written, nothing when all is well.
        return !status.ready;
    }
    match &status.current {
        Some(current) => {
            current.ready != Some(status.ready) || current.error_code != status.error_code
        }
        None => !status.ready,
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacing_status_clears_every_field_it_does_not_set() {
        let status = serde_json::json!({"conditions": [], "observedGeneration": 3});
        let patch = replacing(Kind::OAuthClient, &status);
        assert_eq!(patch["observedGeneration"], 3);
        assert_eq!(patch["conditions"], serde_json::json!([]));
        for cleared in ["errorCode", "clientSecretSha256", "discovered"] {
            assert!(
                patch[cleared].is_null() && patch.get(cleared).is_some(),
                "{cleared}"
            );
        }
        let load_balancer = serde_json::json!({"loadBalancer": {"ingress": []}});
        assert_eq!(replacing(Kind::Ingress, &load_balancer), load_balancer);
        let policy = replacing(Kind::IapPolicy, &status);
        assert!(
            policy.get("discovered").is_none(),
            "only the kind's own fields"
        );
        assert!(policy.get("errorCode").is_some());
    }
}
