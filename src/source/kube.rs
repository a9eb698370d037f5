//! Cluster mode: one kube-runtime watcher per kind feeds a single loop that owns the index and
//! publishes a table whenever something changed.
//!
//! Rules this loop keeps (ARCHITECTURE §6):
//! - nothing is published until every kind has been listed once, so a half-read cluster never
//!   becomes a table (routes without their Secrets would fail closed for no reason);
//! - a relist replaces a kind's objects only when it is complete (`InitDone`); a watch error
//!   changes nothing, so an API outage keeps the last good table serving;
//! - objects are read as `DynamicObject` and converted one by one, so an object that does not
//!   deserialize is reported and skipped while the rest of its kind loads;
//! - only the Secrets other objects name are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::mpsc;

use super::discovery;
use crate::api::gateway::{GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::{IapPolicy, OAuthClient};
use crate::index::{Index, Kind, ObjectKey, Resource};
use crate::metrics::Metrics;
use crate::publish::Published;

/// Where and what to watch.
#[derive(Clone)]
pub struct ClusterSource {
    pub client: kube::Client,
    /// Watch only this namespace; every namespace when `None`.
    pub namespace: Option<String>,
    pub session_keys_secret: ObjectKey,
    /// Ingresses of this IngressClass are served.
    pub ingress_class: String,
    /// Where Gateway listeners are served.
    pub gateway: crate::index::GatewaySettings,
    /// How often Gateway API kinds not served yet are looked for again.
    pub discovery_interval: std::time::Duration,
}

/// An object the API server holds that kube-iap cannot read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Where objects of `kind` live in the API.
pub fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::IapPolicy => ApiResource::erase::<IapPolicy>(&()),
        Kind::OAuthClient => ApiResource::erase::<OAuthClient>(&()),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Kind::Secret => ApiResource::erase::<Secret>(&()),
        Kind::Ingress => ApiResource::erase::<Ingress>(&()),
        Kind::GatewayClass => ApiResource::erase::<GatewayClass>(&()),
        Kind::Gateway => ApiResource::erase::<Gateway>(&()),
        Kind::HttpRoute => ApiResource::erase::<HTTPRoute>(&()),
        Kind::GrpcRoute => ApiResource::erase::<GRPCRoute>(&()),
        Kind::ReferenceGrant => ApiResource::erase::<ReferenceGrant>(&()),
        Kind::Namespace => ApiResource::erase::<Namespace>(&()),
    }
}

/// Annotation `kubectl apply` writes: a full copy of the object, which nothing here reads.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Converts what the API server sent into the typed object the index reads. List items arrive
/// without `apiVersion` and `kind`, so they are set from the watched kind first. Managed fields
/// and kubectl's last-applied copy are dropped: in a real cluster they are most of an object's
/// size, and the index keeps every object it watches.
pub fn to_resource(kind: Kind, mut object: DynamicObject) -> Result<Resource, String> {
    let resource = api_resource(kind);
    object.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    object.metadata.managed_fields = None;
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    let value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<Box<T>, String> {
        // The path names the field at fault: "spec.hosts: invalid type: string …".
        serde_path_to_error::deserialize(value)
            .map(Box::new)
            .map_err(|e| e.to_string())
    }
    Ok(match kind {
        Kind::IapPolicy => Resource::IapPolicy(typed(value)?),
        Kind::OAuthClient => Resource::OAuthClient(typed(value)?),
        Kind::Service => Resource::Service(typed(value)?),
        Kind::EndpointSlice => Resource::EndpointSlice(typed(value)?),
        Kind::Secret => Resource::Secret(typed(value)?),
        Kind::Ingress => Resource::Ingress(typed(value)?),
        Kind::GatewayClass => Resource::GatewayClass(typed(value)?),
        Kind::Gateway => Resource::Gateway(typed(value)?),
        Kind::HttpRoute => Resource::HttpRoute(typed(value)?),
        Kind::GrpcRoute => Resource::GrpcRoute(typed(value)?),
        Kind::ReferenceGrant => Resource::ReferenceGrant(typed(value)?),
        Kind::Namespace => Resource::Namespace(typed(value)?),
    })
}

fn key_of(object: &DynamicObject) -> ObjectKey {
    ObjectKey::new(
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// What reaches the loop.
enum Change {
    Watch(Kind, Box<watcher::Event<DynamicObject>>),
    WatchFailed(Kind, watcher::Error),
    /// The answer to a GET of a Secret that became referenced.
    Fetched(ObjectKey, Option<Box<Secret>>),
}

/// What a change means for the published state, least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    Nothing,
    /// Only an object's status changed (typically the echo of our own status write): the
    /// table stays, the statuses the writer compares are refreshed.
    Statuses,
    Table,
}

/// The loop's state: the index plus what each kind's watcher is in the middle of.
pub struct ClusterState {
    index: Index,
    /// Objects of a relist in progress, by kind; applied whole at `InitDone`.
    relisting: BTreeMap<Kind, Vec<Resource>>,
    /// Kinds listed completely at least once.
    listed: BTreeSet<Kind>,
    errors: BTreeMap<(Kind, ObjectKey), ObjectError>,
    referenced: BTreeSet<ObjectKey>,
}

impl ClusterState {
    pub fn new(session_keys_secret: ObjectKey, ingress_class: &str) -> Self {
        let mut index = Index::default();
        index.set_session_keys_secret(session_keys_secret);
        index.set_ingress_class(ingress_class);
        let referenced = index.referenced_secrets();
        ClusterState {
            index,
            relisting: BTreeMap::new(),
            listed: BTreeSet::new(),
            errors: BTreeMap::new(),
            referenced,
        }
    }

    /// Every kind has been listed once: the index describes the cluster.
    pub fn synced(&self) -> bool {
        self.listed.len() == Kind::ALL.len()
    }

    /// Counts `kind` as listed, and empty, without watching it: its CRD is not installed.
    pub fn assume_empty(&mut self, kind: Kind) {
        self.listed.insert(kind);
    }

    pub fn listed(&self, kind: Kind) -> bool {
        self.listed.contains(&kind)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn errors(&self) -> Vec<ObjectError> {
        self.errors.values().cloned().collect()
    }

    /// Applies one watch event.
    pub fn apply(&mut self, kind: Kind, event: watcher::Event<DynamicObject>) -> Effect {
        match event {
            watcher::Event::Init => {
                // The relist reads every object again and records again what it cannot read.
                self.errors.retain(|(error_kind, _), _| *error_kind != kind);
                self.relisting.insert(kind, Vec::new());
                Effect::Nothing
            }
            watcher::Event::InitApply(object) => {
                if let Some(resource) = self.read(kind, object) {
                    if self.wanted(&resource) {
                        self.relisting.entry(kind).or_default().push(resource);
                    }
                }
                Effect::Nothing
            }
            watcher::Event::InitDone => {
                let objects = self.relisting.remove(&kind).unwrap_or_default();
                self.index.reset(kind, objects);
                self.listed.insert(kind);
                Effect::Table
            }
            watcher::Event::Apply(object) => {
                let key = key_of(&object);
                match self.read(kind, object) {
                    Some(resource) if self.wanted(&resource) => {
                        let effect = if self.index.only_status_differs(&resource) {
                            Effect::Statuses
                        } else {
                            Effect::Table
                        };
                        self.index.apply(resource);
                        effect
                    }
                    // Unreadable, or a Secret nobody names: an older copy must not linger.
                    _ => {
                        self.index.delete(kind, &key);
                        Effect::Table
                    }
                }
            }
            watcher::Event::Delete(object) => {
                let key = key_of(&object);
                self.errors.remove(&(kind, key.clone()));
                self.index.delete(kind, &key);
                Effect::Table
            }
        }
    }

    /// Converts an object, recording why when it cannot be read.
    fn read(&mut self, kind: Kind, object: DynamicObject) -> Option<Resource> {
        let key = key_of(&object);
        match to_resource(kind, object) {
            Ok(resource) => {
                self.errors.remove(&(kind, key));
                Some(resource)
            }
            Err(reason) => {
                tracing::warn!(kind = kind.as_str(), object = %key, %reason, "cannot read object; skipped");
                self.errors.insert(
                    (kind, key.clone()),
                    ObjectError {
                        kind,
                        namespace: key.namespace,
                        name: key.name,
                        reason,
                    },
                );
                None
            }
        }
    }

    fn wanted(&self, resource: &Resource) -> bool {
        resource.kind() != Kind::Secret || self.referenced.contains(&resource.key())
    }

    /// After a change: drops Secrets nobody names any more and returns the newly named ones
    /// the index does not hold, to be fetched.
    pub fn update_references(&mut self) -> Vec<ObjectKey> {
        let referenced = self.index.referenced_secrets();
        for gone in self.referenced.difference(&referenced) {
            self.index.delete(Kind::Secret, gone);
        }
        let new: Vec<ObjectKey> = referenced
            .difference(&self.referenced)
            .filter(|key| !self.index.contains(Kind::Secret, key))
            .cloned()
            .collect();
        self.referenced = referenced;
        new
    }

    /// A fetched Secret counts unless the watch already delivered a (newer) copy.
    pub fn fetched(&mut self, key: ObjectKey, secret: Option<Box<Secret>>) -> Effect {
        match secret {
            Some(secret)
                if self.referenced.contains(&key) && !self.index.contains(Kind::Secret, &key) =>
            {
                self.index.apply(Resource::Secret(secret));
                Effect::Table
            }
            _ => Effect::Nothing,
        }
    }
}

/// How long status-only changes may wait before the status writer sees them.
const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

fn watch_kind(
    client: kube::Client,
    namespace: Option<&str>,
    kind: Kind,
) -> impl futures_util::Stream<Item = Change> + Send + 'static {
    let resource = api_resource(kind);
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) if !matches!(kind, Kind::GatewayClass | Kind::Namespace) => {
            Api::namespaced_with(client, namespace, &resource)
        }
        _ => Api::all_with(client, &resource),
    };
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| match event {
            Ok(event) => Change::Watch(kind, Box::new(event)),
            Err(error) => Change::WatchFailed(kind, error),
        })
}

impl ClusterSource {
    /// Watches until the task is dropped, publishing a table after every burst of changes.
    pub async fn run(self, published: Arc<Published>, metrics: Arc<Metrics>) {
        let watch = |kind| watch_kind(self.client.clone(), self.namespace.as_deref(), kind).boxed();
        let mut state = ClusterState::new(self.session_keys_secret.clone(), &self.ingress_class);
        state.index.set_gateway_settings(self.gateway.clone());
        let served = discovery::served_gateway_kinds(&self.client).await;
        let mut watched = discovery::kinds_to_watch(&served);
        for kind in Kind::FOR_GATEWAY_API {
            if !watched.contains(&kind) {
                tracing::info!(
                    kind = kind.as_str(),
                    "the cluster does not serve this Gateway API kind (its CRD is not installed): \
                     it is read once its CRD is installed"
                );
                state.assume_empty(kind);
            }
        }
        let (found_tx, mut found_rx) = mpsc::channel(4);
        if served.len() < Kind::GATEWAY_API.len() {
            tokio::spawn(discovery::watch_for_new_kinds(
                self.client.clone(),
                served,
                self.discovery_interval,
                found_tx,
            ));
        }
        // Secrets are watched once the objects naming them are known, so their first list
        // keeps only the named ones instead of fetching each of those one by one.
        let mut changes = futures_util::stream::select_all(
            Kind::ALL
                .into_iter()
                .filter(|kind| *kind != Kind::Secret)
                .filter(|kind| !Kind::FOR_GATEWAY_API.contains(kind) || watched.contains(kind))
                .map(watch),
        );
        let mut secrets_watched = false;
        let mut warned_about_keys = false;
        let (fetched_tx, mut fetched_rx) = mpsc::channel::<Change>(64);
        // Status-only changes (mostly echoes of our own writes, thousands after a start) are
        // folded in at most once per STATUS_REFRESH, so they never queue ahead of real changes.
        let mut statuses_stale_since: Option<tokio::time::Instant> = None;
        loop {
            let refresh_at = statuses_stale_since.map(|since| since + STATUS_REFRESH);
            let first = tokio::select! {
                Some(change) = changes.next() => change,
                Some(change) = fetched_rx.recv() => change,
                Some(found) = found_rx.recv() => {
                    // CRDs installed since the start: their kinds are watched from now on, and
                    // their first list replaces the empty set they were counted as.
                    for kind in discovery::kinds_to_watch(&found) {
                        if !watched.contains(&kind) {
                            tracing::info!(kind = kind.as_str(), "the cluster now serves this Gateway API kind: watching it");
                            watched.push(kind);
                            changes.push(watch(kind));
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(refresh_at.unwrap_or_else(tokio::time::Instant::now)),
                    if refresh_at.is_some() =>
                {
                    published.refresh_current_statuses(state.index());
                    statuses_stale_since = None;
                    // The echoes of a round of status writes (one per object) were read and
                    // dropped; their memory goes back now, not whenever this thread next
                    // allocates.
                    crate::allocator::release_freed_memory();
                    continue;
                }
                else => return,
            };
            let mut effect = self.handle(&mut state, first, &metrics);
            // Whatever else is already waiting joins this build: a relist or a `kubectl apply`
            // of many objects becomes one table, not hundreds.
            while let Some(Some(change)) = changes.next().now_or_never() {
                effect = effect.max(self.handle(&mut state, change, &metrics));
            }
            let namers_listed = [Kind::IapPolicy, Kind::OAuthClient, Kind::Ingress]
                .iter()
                .all(|kind| state.listed(*kind));
            if !secrets_watched && namers_listed {
                state.update_references();
                changes.push(watch(Kind::Secret));
                secrets_watched = true;
            }
            if effect == Effect::Nothing || !state.synced() {
                continue;
            }
            if effect == Effect::Statuses {
                statuses_stale_since.get_or_insert_with(tokio::time::Instant::now);
                continue;
            }
            // A new table carries every object's current status.
            statuses_stale_since = None;
            for key in state.update_references() {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
                let sender = fetched_tx.clone();
                tokio::spawn(async move {
                    // The watch already passed this Secret by (nobody named it then), so it
                    // arrives only through this GET: retried, with backoff, until it answers.
                    let mut wait = std::time::Duration::from_secs(1);
                    loop {
                        match api.get_opt(&key.name).await {
                            Ok(secret) => {
                                let _ = sender
                                    .send(Change::Fetched(key, secret.map(Box::new)))
                                    .await;
                                return;
                            }
                            Err(error) => {
                                tracing::warn!(secret = %key, %error, retry_in_secs = wait.as_secs(), "cannot read a referenced Secret");
                                tokio::time::sleep(wait).await;
                                wait = (wait * 2).min(std::time::Duration::from_secs(60));
                            }
                        }
                    }
                });
            }
            published.publish_cluster(state.index(), state.errors(), &metrics);
            let table = published.table.load();
            if !warned_about_keys && (table.session_keys.is_none() || table.signing_keys.is_none())
            {
                warned_about_keys = true;
                tracing::warn!(
                    secret = %self.session_keys_secret,
                    "no session or signing keys Secret: this replica uses keys generated at start, so \
                     replicas do not share sessions and sign-ins end with a restart; create the Secrets \
                     (see README, Installing in a cluster)"
                );
            }
        }
    }

    fn handle(&self, state: &mut ClusterState, change: Change, metrics: &Metrics) -> Effect {
        match change {
            Change::Watch(kind, event) => state.apply(kind, *event),
            Change::Fetched(key, secret) => state.fetched(key, secret),
            Change::WatchFailed(kind, error) => {
                // The watcher backs off and resumes by itself; the last table keeps serving.
                metrics
                    .watch_errors
                    .with_label_values(&[kind.as_str()])
                    .inc();
                tracing::warn!(kind = kind.as_str(), %error, "watch failed; retrying with backoff, the last table keeps serving");
                Effect::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use watcher::Event;

    #[test]
    fn managed_fields_and_the_last_applied_copy_are_not_kept() {
        let service = object(json!({
            "metadata": {
                "name": "web", "namespace": "apps",
                "annotations": {
                    LAST_APPLIED_ANNOTATION: "{\"a\": \"full copy\"}",
                    "kube-iap.io/policy": "app",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"ports": [{"port": 80}]},
        }));
        let Ok(Resource::Service(service)) = to_resource(Kind::Service, service) else {
            panic!("a Service");
        };
        assert!(service.metadata.managed_fields.is_none());
        let annotations = service.metadata.annotations.expect("annotations kept");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["kube-iap.io/policy"], "app");
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a DynamicObject")
    }

    fn policy(name: &str, hosts: serde_json::Value) -> DynamicObject {
        object(json!({
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"oauthClientRef": {"name": "idp"}, "hosts": hosts},
        }))
    }

    fn secret(name: &str) -> DynamicObject {
        object(json!({"metadata": {"name": name, "namespace": "apps"}, "data": {"k": "dmFsdWU="}}))
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("apps", name)
    }

    fn state() -> ClusterState {
        ClusterState::new(
            ObjectKey::new("kube-iap", "kube-iap-session-keys"),
            "kube-iap",
        )
    }

    #[test]
    fn a_relist_replaces_its_kind_only_when_complete() {
        let mut state = state();
        state.apply(
            Kind::IapPolicy,
            Event::Apply(policy("old", json!(["a.test"]))),
        );
        state.apply(Kind::IapPolicy, Event::Init);
        state.apply(
            Kind::IapPolicy,
            Event::InitApply(policy("new", json!(["b.test"]))),
        );
        assert!(state.index().contains(Kind::IapPolicy, &key("old")));
        assert!(!state.index().contains(Kind::IapPolicy, &key("new")));
        assert!(!state.synced());

        assert_eq!(state.apply(Kind::IapPolicy, Event::InitDone), Effect::Table);
        assert!(!state.index().contains(Kind::IapPolicy, &key("old")));
        assert!(state.index().contains(Kind::IapPolicy, &key("new")));
        assert!(state.listed(Kind::IapPolicy));
    }

    #[test]
    fn the_echo_of_a_status_write_does_not_rebuild_the_table() {
        let mut state = state();
        let first = policy("p", json!(["a.test"]));
        assert_eq!(
            state.apply(Kind::IapPolicy, Event::Apply(first.clone())),
            Effect::Table
        );
        let mut echoed = first.clone();
        echoed.data["status"] = json!({"errorCode": 13});
        echoed.metadata.resource_version = Some("7".into());
        assert_eq!(
            state.apply(Kind::IapPolicy, Event::Apply(echoed)),
            Effect::Statuses
        );
        let mut edited = first;
        edited.data["spec"]["hosts"] = json!(["b.test"]);
        assert_eq!(
            state.apply(Kind::IapPolicy, Event::Apply(edited)),
            Effect::Table
        );
    }

    #[test]
    fn an_unreadable_object_is_reported_skipped_and_forgotten_once_fixed() {
        let mut state = state();
        state.apply(
            Kind::IapPolicy,
            Event::Apply(policy("p", json!(["a.test"]))),
        );
        state.apply(Kind::IapPolicy, Event::Apply(policy("p", json!("a.test"))));
        // The older, readable copy does not linger: the object is not served at all.
        assert!(!state.index().contains(Kind::IapPolicy, &key("p")));
        let errors = state.errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].name, "p");
        assert!(
            errors[0].reason.starts_with("spec.hosts"),
            "{}",
            errors[0].reason
        );

        state.apply(
            Kind::IapPolicy,
            Event::Apply(policy("p", json!(["a.test"]))),
        );
        assert!(state.errors().is_empty());
        assert!(state.index().contains(Kind::IapPolicy, &key("p")));
    }

    #[test]
    fn only_secrets_that_objects_name_are_kept() {
        let mut state = state();
        let client = object(json!({
            "metadata": {"name": "idp", "namespace": "apps"},
            "spec": {"issuer": "https://idp.test", "clientId": "c",
                     "clientSecretRef": {"name": "named", "key": "k"}},
        }));
        state.apply(Kind::OAuthClient, Event::Apply(client));
        // The client's Secret is not held yet: it is to be fetched.
        assert_eq!(state.update_references(), [key("named")]);
        state.apply(Kind::Secret, Event::Apply(secret("named")));
        state.apply(Kind::Secret, Event::Apply(secret("unrelated")));
        assert!(state.index().contains(Kind::Secret, &key("named")));
        assert!(!state.index().contains(Kind::Secret, &key("unrelated")));
        // A fetch answered after the watch delivered the Secret changes nothing.
        assert_eq!(state.fetched(key("named"), None), Effect::Nothing);

        state.apply(
            Kind::OAuthClient,
            Event::Delete(object(
                json!({"metadata": {"name": "idp", "namespace": "apps"}}),
            )),
        );
        assert!(state.update_references().is_empty());
        assert!(
            !state.index().contains(Kind::Secret, &key("named")),
            "a Secret nobody names is dropped"
        );
    }
}
