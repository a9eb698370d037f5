//! The objects the index accepts, keyed by kind, namespace and name.

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::gateway::{GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::{IapPolicy, OAuthClient};

/// The kinds of object the index reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    IapPolicy,
    OAuthClient,
    Service,
    EndpointSlice,
    Secret,
    Ingress,
    GatewayClass,
    Gateway,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    ReferenceGrant,
    /// Read for their labels only: a Gateway listener's `allowedRoutes` may select namespaces.
    Namespace,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::IapPolicy,
        Kind::OAuthClient,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Ingress,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
    ];

    /// Kinds read only for the Gateway API, so only where the cluster serves it.
    pub const FOR_GATEWAY_API: [Kind; 6] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
    ];

    /// The Gateway API kinds, read only where the cluster serves their CRDs.
    pub const GATEWAY_API: [Kind; 5] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
    ];

    /// The route kinds: their `status.parents` is shared with other controllers.
    pub fn is_gateway_route(self) -> bool {
        matches!(self, Kind::HttpRoute | Kind::GrpcRoute)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IapPolicy => "IapPolicy",
            Kind::OAuthClient => "OAuthClient",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
        }
    }
}

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn of(meta: &ObjectMeta) -> Self {
        ObjectKey::new(
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One object of a kind the index reads.
#[derive(Clone, Debug)]
pub enum Resource {
    IapPolicy(Box<IapPolicy>),
    OAuthClient(Box<OAuthClient>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Secret(Box<Secret>),
    Ingress(Box<Ingress>),
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    HttpRoute(Box<HTTPRoute>),
    GrpcRoute(Box<GRPCRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Namespace(Box<Namespace>),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::IapPolicy(_) => Kind::IapPolicy,
            Resource::OAuthClient(_) => Kind::OAuthClient,
            Resource::Service(_) => Kind::Service,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Secret(_) => Kind::Secret,
            Resource::Ingress(_) => Kind::Ingress,
            Resource::GatewayClass(_) => Kind::GatewayClass,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::GrpcRoute(_) => Kind::GrpcRoute,
            Resource::ReferenceGrant(_) => Kind::ReferenceGrant,
            Resource::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::IapPolicy(o) => &o.metadata,
            Resource::OAuthClient(o) => &o.metadata,
            Resource::Service(o) => &o.metadata,
            Resource::EndpointSlice(o) => &o.metadata,
            Resource::Secret(o) => &o.metadata,
            Resource::Ingress(o) => &o.metadata,
            Resource::GatewayClass(o) => &o.metadata,
            Resource::Gateway(o) => &o.metadata,
            Resource::HttpRoute(o) => &o.metadata,
            Resource::GrpcRoute(o) => &o.metadata,
            Resource::ReferenceGrant(o) => &o.metadata,
            Resource::Namespace(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::IapPolicy(o) => &mut o.metadata,
            Resource::OAuthClient(o) => &mut o.metadata,
            Resource::Service(o) => &mut o.metadata,
            Resource::EndpointSlice(o) => &mut o.metadata,
            Resource::Secret(o) => &mut o.metadata,
            Resource::Ingress(o) => &mut o.metadata,
            Resource::GatewayClass(o) => &mut o.metadata,
            Resource::Gateway(o) => &mut o.metadata,
            Resource::HttpRoute(o) => &mut o.metadata,
            Resource::GrpcRoute(o) => &mut o.metadata,
            Resource::ReferenceGrant(o) => &mut o.metadata,
            Resource::Namespace(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            // Cluster-scoped: no namespace, whatever a manifest says.
            Resource::GatewayClass(_) | Resource::Namespace(_) => {
                ObjectKey::new("", self.meta().name.clone().unwrap_or_default())
            }
            _ => ObjectKey::of(self.meta()),
        }
    }
}

impl Resource {
    /// Takes a Gateway API object's status out of it: `None` for other kinds, `Some(None)`
    /// when it has none.
    pub fn take_gateway_api_status(&mut self) -> Option<Option<serde_json::Value>> {
        match self {
            Resource::GatewayClass(o) => Some(o.status.take()),
            Resource::Gateway(o) => Some(o.status.take()),
            Resource::HttpRoute(o) => Some(o.status.take()),
            Resource::GrpcRoute(o) => Some(o.status.take()),
            _ => None,
        }
    }

    /// The object with only what the index reads. At 10,000 Services and EndpointSlices the
    /// rest (cluster IPs, selectors, topology, target references, status) is most of their
    /// size, and the index keeps every one it watches.
    pub fn trimmed(self) -> Self {
        match self {
            Resource::Service(mut service) => {
                trim_meta(&mut service.metadata, |_| false);
                service.status = None;
                if let Some(spec) = service.spec.take() {
                    service.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
                        ports: spec.ports,
                        type_: spec.type_,
                        external_name: spec.external_name,
                        ..Default::default()
                    });
                }
                Resource::Service(service)
            }
            Resource::Namespace(mut namespace) => {
                // Only its name and labels are read.
                trim_meta(&mut namespace.metadata, |_| true);
                namespace.metadata.annotations = None;
                namespace.spec = None;
                namespace.status = None;
                Resource::Namespace(namespace)
            }
            Resource::EndpointSlice(mut slice) => {
                trim_meta(&mut slice.metadata, |label| {
                    label == super::backends::SERVICE_NAME_LABEL
                });
                for endpoint in slice.endpoints.iter_mut().flatten() {
                    *endpoint = k8s_openapi::api::discovery::v1::Endpoint {
                        addresses: std::mem::take(&mut endpoint.addresses),
                        conditions: endpoint.conditions.take(),
                        ..Default::default()
                    };
                }
                Resource::EndpointSlice(slice)
            }
            other => other,
        }
    }
}

/// Keeps a Service's or EndpointSlice's identity, the `kube-iap.io/` annotations and the
/// labels `keep_label` names. (Managed fields are already gone: the cluster source drops them
/// before the object is even typed.)
fn trim_meta(meta: &mut ObjectMeta, keep_label: impl Fn(&str) -> bool) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|name, _| name.starts_with(crate::api::ANNOTATION_PREFIX));
    }
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|name, _| keep_label(name));
    }
    meta.owner_references = None;
    meta.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trimmed_service_keeps_what_routing_reads_and_nothing_else() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "u1",
                         "labels": {"app": "web"},
                         "annotations": {"kube-iap.io/policy": "p", "kube-iap.io/port": "http",
                                         "example.com/owner": "team"}},
            "spec": {"type": "ExternalName", "externalName": "web.example.com",
                     "clusterIP": "10.0.0.1", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80}]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        let Resource::Service(trimmed) = Resource::Service(Box::new(service)).trimmed() else {
            unreachable!()
        };
        let annotations = trimmed.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["kube-iap.io/policy", "kube-iap.io/port"]
        );
        assert_eq!(trimmed.metadata.uid.as_deref(), Some("u1"));
        assert!(trimmed.metadata.labels.as_ref().unwrap().is_empty());
        assert!(trimmed.status.is_none());
        let spec = trimmed.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert_eq!(spec.external_name.as_deref(), Some("web.example.com"));
        assert_eq!(spec.ports.unwrap()[0].name.as_deref(), Some("http"));
        assert!(spec.cluster_ip.is_none() && spec.selector.is_none());
    }

    #[test]
    fn a_trimmed_endpoint_slice_keeps_its_service_ports_addresses_and_readiness() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": "web",
                                    "endpointslice.kubernetes.io/managed-by": "x"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": false},
                           "nodeName": "node-1", "zone": "a",
                           "targetRef": {"kind": "Pod", "name": "web-abc"}}]
        }))
        .unwrap();
        let Resource::EndpointSlice(trimmed) = Resource::EndpointSlice(Box::new(slice)).trimmed()
        else {
            unreachable!()
        };
        let labels = trimmed.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["kubernetes.io/service-name"]
        );
        assert_eq!(trimmed.ports.as_ref().unwrap()[0].port, Some(8080));
        let endpoint = &trimmed.endpoints.as_ref().unwrap()[0];
        assert_eq!(endpoint.addresses, ["10.1.0.5"]);
        assert_eq!(endpoint.conditions.as_ref().unwrap().ready, Some(false));
        assert!(endpoint.node_name.is_none() && endpoint.target_ref.is_none());
    }
}
