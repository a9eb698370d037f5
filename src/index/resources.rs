//! The objects the index accepts, keyed by kind, namespace and name.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

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
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::IapPolicy,
        Kind::OAuthClient,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Ingress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IapPolicy => "IapPolicy",
            Kind::OAuthClient => "OAuthClient",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
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
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.meta())
    }
}
