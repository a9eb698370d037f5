//! The index: a pure translation from resources to one immutable [`RoutingTable`] plus a computed
//! status per IapPolicy and OAuthClient. Sources (the manifests folder, the Kubernetes watches)
//! call [`Index::apply`], [`Index::delete`] and [`Index::reset`], then [`Index::build`]; nothing
//! here does I/O, so every rule is tested by feeding objects in and reading what comes out.

mod access;
mod backends;
mod build;
mod clients;
mod gateway;
mod ingress;
mod resources;
mod reuse;
mod revisions;
mod session_keys;
mod signing_keys;
mod status;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::gateway::{GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::{IapPolicy, OAuthClient};
use crate::model::RoutingTable;

pub use backends::SERVICE_NAME_LABEL;
pub use gateway::GatewaySettings;
pub use ingress::DEFAULT_INGRESS_CLASS;
pub use resources::{Kind, ObjectKey, Resource};
pub use session_keys::DEFAULT_SECRET_NAME as DEFAULT_SESSION_KEYS_SECRET;
pub use signing_keys::DEFAULT_SECRET_NAME as DEFAULT_SIGNING_KEYS_SECRET;
pub use status::{ComputedStatus, CurrentStatus, Problem};

/// Everything the index knows, by kind. Objects are boxed: a B-tree node holds eleven slots,
/// and a Service inline is 824 bytes, so at 10,000 Services the empty slots alone cost
/// megabytes.
#[derive(Default, Clone)]
pub struct Index {
    policies: BTreeMap<ObjectKey, Box<IapPolicy>>,
    clients: BTreeMap<ObjectKey, Box<OAuthClient>>,
    services: BTreeMap<ObjectKey, Box<Service>>,
    slices: BTreeMap<ObjectKey, Box<EndpointSlice>>,
    /// The EndpointSlices of each Service (by their `kubernetes.io/service-name` label), kept as
    /// slices come and go: grouping 10,000 slices anew was a tenth of a build after one change.
    /// (A Vec: a Service has one slice or a few, and a B-tree set allocated a node for 11.)
    slices_by_service: foldhash::HashMap<ObjectKey, Vec<ObjectKey>>,
    secrets: BTreeMap<ObjectKey, Box<Secret>>,
    ingresses: BTreeMap<ObjectKey, Box<Ingress>>,
    /// GatewayClasses are cluster-scoped: their key's namespace is empty.
    gateway_classes: BTreeMap<ObjectKey, Box<GatewayClass>>,
    gateways: BTreeMap<ObjectKey, Box<Gateway>>,
    http_routes: BTreeMap<ObjectKey, Box<HTTPRoute>>,
    grpc_routes: BTreeMap<ObjectKey, Box<GRPCRoute>>,
    reference_grants: BTreeMap<ObjectKey, Box<ReferenceGrant>>,
    namespaces: BTreeMap<ObjectKey, Box<Namespace>>,
    /// The statuses Gateway API objects carry now, read once as they arrive: the objects are
    /// kept without them. A build copies every object's current status, and 10,000 route
    /// statuses kept as JSON trees were slow to copy and most of the controller's memory.
    gateway_statuses: foldhash::HashMap<(Kind, ObjectKey), status::ShownApiStatus>,
    /// The ports kube-iap's own Service exposes for plain HTTP and for HTTPS: the only ports
    /// a Gateway listener can be served on.
    gateway_settings: GatewaySettings,
    /// The IngressClass served; `kube-iap` unless set.
    ingress_class: Option<String>,
    /// Where the session keys live; `default/kube-iap-session-keys` unless set.
    session_keys_secret: Option<ObjectKey>,
    /// What changed when, so a build recompiles only the policies a change touches.
    revisions: revisions::Revisions,
    /// The compiled policies of the last build, reused while their inputs are unchanged.
    compiled: reuse::CompiledPolicies,
    /// The translated HTTPRoute and GRPCRoute rules of the last build, reused likewise.
    gateway_rules: gateway::TranslatedRules,
}

/// What one build produces: the table for the data plane and the statuses for the status writer.
pub struct Snapshot {
    pub table: RoutingTable,
    pub statuses: Vec<ComputedStatus>,
}

impl Index {
    /// Adds or replaces one object.
    pub fn apply(&mut self, resource: Resource) {
        let key = resource.key();
        if !self.only_status_differs(&resource) {
            self.revisions.object_changed(resource.kind(), &key);
            if let Resource::EndpointSlice(slice) = &resource {
                self.note_slice_change(&key, Some(&slice.metadata));
            }
        }
        let mut resource = resource.trimmed();
        match resource.take_gateway_api_status() {
            Some(Some(status)) => {
                let kind = resource.kind();
                let mut current = CurrentStatus::of_gateway_api(kind, &status);
                // Usually the echo of what the last build computed: share that text.
                if let (Some(shown), Some(computed)) = (
                    current.api_status.as_ref(),
                    self.gateway_rules.computed_status(kind, &key),
                ) {
                    if *shown == computed {
                        current.api_status = Some(computed);
                    }
                }
                self.gateway_statuses
                    .insert((kind, key.clone()), current.into());
            }
            Some(None) => drop(
                self.gateway_statuses
                    .remove(&(resource.kind(), key.clone())),
            ),
            None => {}
        }
        match resource {
            Resource::IapPolicy(o) => drop(self.policies.insert(key, o)),
            Resource::OAuthClient(o) => drop(self.clients.insert(key, o)),
            Resource::Service(o) => drop(self.services.insert(key, o)),
            Resource::EndpointSlice(o) => drop(self.slices.insert(key, o)),
            Resource::Secret(o) => drop(self.secrets.insert(key, o)),
            Resource::Ingress(o) => drop(self.ingresses.insert(key, o)),
            Resource::GatewayClass(o) => drop(self.gateway_classes.insert(key, o)),
            Resource::Gateway(o) => drop(self.gateways.insert(key, o)),
            Resource::HttpRoute(o) => drop(self.http_routes.insert(key, o)),
            Resource::GrpcRoute(o) => drop(self.grpc_routes.insert(key, o)),
            Resource::ReferenceGrant(o) => drop(self.reference_grants.insert(key, o)),
            Resource::Namespace(o) => drop(self.namespaces.insert(key, o)),
        }
    }

    /// Removes one object; removing an unknown object is not an error.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) {
        self.revisions.object_changed(kind, key);
        self.gateway_statuses.remove(&(kind, key.clone()));
        if kind == Kind::EndpointSlice {
            self.note_slice_change(key, None);
        }
        match kind {
            Kind::IapPolicy => drop(self.policies.remove(key)),
            Kind::OAuthClient => drop(self.clients.remove(key)),
            Kind::Service => drop(self.services.remove(key)),
            Kind::EndpointSlice => drop(self.slices.remove(key)),
            Kind::Secret => drop(self.secrets.remove(key)),
            Kind::Ingress => drop(self.ingresses.remove(key)),
            Kind::GatewayClass => drop(self.gateway_classes.remove(key)),
            Kind::Gateway => drop(self.gateways.remove(key)),
            Kind::HttpRoute => drop(self.http_routes.remove(key)),
            Kind::GrpcRoute => drop(self.grpc_routes.remove(key)),
            Kind::ReferenceGrant => drop(self.reference_grants.remove(key)),
            Kind::Namespace => drop(self.namespaces.remove(key)),
        }
    }

    /// Replaces every object of `kind` with `objects` (a relist). Objects of other kinds in the
    /// list are applied too, so a caller may reset all kinds with one list per kind.
    pub fn reset(&mut self, kind: Kind, objects: impl IntoIterator<Item = Resource>) {
        self.revisions.relisted();
        self.gateway_statuses.retain(|(of, _), _| *of != kind);
        match kind {
            Kind::IapPolicy => self.policies.clear(),
            Kind::OAuthClient => self.clients.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => {
                self.slices.clear();
                self.slices_by_service.clear();
            }
            Kind::Secret => self.secrets.clear(),
            Kind::Ingress => self.ingresses.clear(),
            Kind::GatewayClass => self.gateway_classes.clear(),
            Kind::Gateway => self.gateways.clear(),
            Kind::HttpRoute => self.http_routes.clear(),
            Kind::GrpcRoute => self.grpc_routes.clear(),
            Kind::ReferenceGrant => self.reference_grants.clear(),
            Kind::Namespace => self.namespaces.clear(),
        }
        for object in objects {
            self.apply(object);
        }
    }

    /// Stamps the Services an EndpointSlice belonged to and now belongs to (by its label), and
    /// moves it between their groups.
    fn note_slice_change(&mut self, key: &ObjectKey, new: Option<&ObjectMeta>) {
        let service_of = |meta: &ObjectMeta| {
            meta.labels
                .as_ref()
                .and_then(|labels| labels.get(backends::SERVICE_NAME_LABEL))
                .map(|service| ObjectKey::new(&key.namespace, service))
        };
        let old = self
            .slices
            .get(key)
            .and_then(|slice| service_of(&slice.metadata));
        let new = new.and_then(service_of);
        if let Some(old) = &old {
            if let Some(group) = self.slices_by_service.get_mut(old) {
                group.retain(|slice| slice != key);
                if group.is_empty() {
                    self.slices_by_service.remove(old);
                }
            }
        }
        if let Some(new) = &new {
            // Kept in name order, so every replica lists a Service's endpoints alike.
            let group = self.slices_by_service.entry(new.clone()).or_default();
            if let Err(at) = group.binary_search(key) {
                group.insert(at, key.clone());
            }
        }
        for service in old.into_iter().chain(new) {
            self.revisions.slices_changed(service);
        }
    }

    /// The EndpointSlices labelled with `service`.
    pub(crate) fn slices_of<'a>(
        &'a self,
        service: &ObjectKey,
    ) -> impl Iterator<Item = &'a EndpointSlice> + use<'a> {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|key| self.slices.get(key).map(|slice| &**slice))
    }

    /// Names the Secret that holds the session key ring.
    pub fn set_session_keys_secret(&mut self, key: ObjectKey) {
        self.session_keys_secret = Some(key);
    }

    /// Sets the ports Gateway listeners may use (those kube-iap's Service exposes).
    pub fn set_gateway_settings(&mut self, ports: GatewaySettings) {
        self.gateway_settings = ports;
    }

    /// Names the IngressClass whose Ingresses are served.
    pub fn set_ingress_class(&mut self, class: impl Into<String>) {
        self.ingress_class = Some(class.into());
    }

    pub(crate) fn ingress_class(&self) -> &str {
        self.ingress_class
            .as_deref()
            .unwrap_or(DEFAULT_INGRESS_CLASS)
    }

    pub(crate) fn session_keys_secret(&self) -> ObjectKey {
        self.session_keys_secret
            .clone()
            .unwrap_or_else(|| ObjectKey::new("default", DEFAULT_SESSION_KEYS_SECRET))
    }

    /// The Secrets the other objects name: session and signing keys, client secrets, TLS
    /// certificates. In a cluster only these are kept, so memory does not grow with the
    /// cluster's Secret count.
    pub fn referenced_secrets(&self) -> BTreeSet<ObjectKey> {
        let keys = self.session_keys_secret();
        let mut referenced = BTreeSet::from([
            ObjectKey::new(&keys.namespace, signing_keys::DEFAULT_SECRET_NAME),
            keys,
        ]);
        for (key, client) in &self.clients {
            if let Some(secret) = &client.spec.client_secret_ref {
                referenced.insert(ObjectKey::new(&key.namespace, &secret.name));
            }
        }
        for (key, policy) in &self.policies {
            if let Some(tls) = &policy.spec.tls {
                referenced.insert(ObjectKey::new(&key.namespace, &tls.secret_name));
            }
        }
        for (key, ingress) in &self.ingresses {
            if !ingress::is_served_class(ingress, self.ingress_class()) {
                continue;
            }
            let tls = ingress.spec.as_ref().and_then(|spec| spec.tls.as_ref());
            for entry in tls.into_iter().flatten() {
                if let Some(name) = &entry.secret_name {
                    referenced.insert(ObjectKey::new(&key.namespace, name));
                }
            }
        }
        referenced
    }

    pub(crate) fn service(&self, key: &ObjectKey) -> Option<&Service> {
        self.services.get(key).map(|service| &**service)
    }

    pub(crate) fn secret(&self, key: &ObjectKey) -> Option<&Secret> {
        self.secrets.get(key).map(|secret| &**secret)
    }

    /// Whether the index holds this object.
    pub fn contains(&self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::IapPolicy => self.policies.contains_key(key),
            Kind::OAuthClient => self.clients.contains_key(key),
            Kind::Service => self.services.contains_key(key),
            Kind::EndpointSlice => self.slices.contains_key(key),
            Kind::Secret => self.secrets.contains_key(key),
            Kind::Ingress => self.ingresses.contains_key(key),
            Kind::GatewayClass => self.gateway_classes.contains_key(key),
            Kind::Gateway => self.gateways.contains_key(key),
            Kind::HttpRoute => self.http_routes.contains_key(key),
            Kind::GrpcRoute => self.grpc_routes.contains_key(key),
            Kind::ReferenceGrant => self.reference_grants.contains_key(key),
            Kind::Namespace => self.namespaces.contains_key(key),
        }
    }

    /// How many objects of each kind the index holds.
    pub fn counts(&self) -> [(Kind, usize); 12] {
        [
            (Kind::Namespace, self.namespaces.len()),
            (Kind::ReferenceGrant, self.reference_grants.len()),
            (Kind::GatewayClass, self.gateway_classes.len()),
            (Kind::Gateway, self.gateways.len()),
            (Kind::HttpRoute, self.http_routes.len()),
            (Kind::GrpcRoute, self.grpc_routes.len()),
            (Kind::IapPolicy, self.policies.len()),
            (Kind::OAuthClient, self.clients.len()),
            (Kind::Service, self.services.len()),
            (Kind::EndpointSlice, self.slices.len()),
            (Kind::Secret, self.secrets.len()),
            (Kind::Ingress, self.ingresses.len()),
        ]
    }

    /// Whether `resource` differs from the held copy only in its status (and bookkeeping such as
    /// resourceVersion): then the table cannot change, only what the status writer compares.
    pub fn only_status_differs(&self, resource: &Resource) -> bool {
        let key = resource.key();
        fn same_meta(a: &ObjectMeta, b: &ObjectMeta) -> bool {
            a.uid == b.uid
                && a.generation == b.generation
                && a.labels == b.labels
                && a.annotations == b.annotations
                && a.creation_timestamp == b.creation_timestamp
                && a.deletion_timestamp == b.deletion_timestamp
        }
        match resource {
            Resource::IapPolicy(new) => self
                .policies
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::OAuthClient(new) => self
                .clients
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::Ingress(new) => self
                .ingresses
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::GatewayClass(new) => self
                .gateway_classes
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::Gateway(new) => self
                .gateways
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::HttpRoute(new) => self
                .http_routes
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            Resource::GrpcRoute(new) => self
                .grpc_routes
                .get(&key)
                .is_some_and(|old| old.spec == new.spec && same_meta(&old.metadata, &new.metadata)),
            _ => false,
        }
    }

    /// Refreshes what each status says the object carries now, after status-only changes.
    pub fn record_current_statuses(&self, statuses: &mut [ComputedStatus]) {
        for status in statuses {
            build::record_current_status(self, status);
        }
    }

    /// Translates everything into a new table and statuses.
    pub fn build(&self) -> Snapshot {
        build::build(self)
    }
}
