//! Resolves a Service port to the addresses requests go to.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ObjectKey;
use crate::model::Upstream;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How the Service port is named: by number (`spec.backend.port`) or by the port annotation,
/// which may hold a number or a port name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSelector {
    Number(u16),
    Name(String),
    /// The Service's only port (annotation absent).
    Only,
}

impl PortSelector {
    pub fn parse(text: &str) -> Self {
        match text.parse::<u16>() {
            Ok(number) => PortSelector::Number(number),
            Err(_) => PortSelector::Name(text.to_string()),
        }
    }
}

/// EndpointSlices grouped by the Service they belong to (the index keeps the groups).
pub struct SlicesByService<'a> {
    index: &'a super::Index,
}

impl<'a> SlicesByService<'a> {
    pub fn new(index: &'a super::Index) -> Self {
        SlicesByService { index }
    }

    fn of(&self, service: &ObjectKey) -> impl Iterator<Item = &'a EndpointSlice> + use<'a> {
        self.index.slices_of(service)
    }
}

/// A Service port that could not be resolved; shown on the policy's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("Service {0} does not exist")]
    ServiceNotFound(ObjectKey),
    #[error("Service {service} has no port {port}")]
    PortNotFound { service: ObjectKey, port: String },
    #[error("Service {0} has several ports; name one with the kube-iap.io/port annotation")]
    AmbiguousPort(ObjectKey),
}

/// The resolved port: its display name and the upstream addresses that are ready now.
pub struct ResolvedBackend {
    pub name: String,
    pub upstreams: Vec<Upstream>,
    /// The port's `appProtocol` is `kubernetes.io/h2c`: it speaks cleartext HTTP/2.
    pub h2c: bool,
}

/// The `appProtocol` of a Service port that speaks HTTP/2 in the clear (Kubernetes' own name).
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

pub fn resolve(
    key: &ObjectKey,
    service: Option<&Service>,
    selector: &PortSelector,
    slices: &SlicesByService<'_>,
) -> Result<ResolvedBackend, BackendError> {
    let service = service.ok_or_else(|| BackendError::ServiceNotFound(key.clone()))?;
    let spec = service.spec.as_ref();
    let ports = spec
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let port = select_port(key, ports, selector)?;
    let name = format!("{key}:{}", port.port);
    let h2c = port.app_protocol.as_deref() == Some(H2C_APP_PROTOCOL);

    if spec.and_then(|spec| spec.type_.as_deref()) == Some("ExternalName") {
        let upstreams = spec
            .and_then(|spec| spec.external_name.as_ref())
            .iter()
            .filter_map(|host| upstream(host, port.port))
            .collect();
        return Ok(ResolvedBackend {
            name,
            upstreams,
            h2c,
        });
    }

    let mut upstreams = Vec::new();
    for slice in slices.of(key) {
        // An EndpointSlice names its ports like the Service does; an unnamed Service port matches
        // the slice's unnamed port.
        let slice_port = slice.ports.iter().flatten().find(|candidate| {
            candidate.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or("")
        });
        let Some(number) = slice_port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            // `ready` unset means ready, as the EndpointSlice API defines it.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Some(candidate) = upstream(address, number) {
                    if !upstreams.contains(&candidate) {
                        upstreams.push(candidate);
                    }
                }
            }
        }
    }
    Ok(ResolvedBackend {
        name,
        upstreams,
        h2c,
    })
}

fn select_port<'p>(
    key: &ObjectKey,
    ports: &'p [ServicePort],
    selector: &PortSelector,
) -> Result<&'p ServicePort, BackendError> {
    let not_found = |port: String| BackendError::PortNotFound {
        service: key.clone(),
        port,
    };
    match selector {
        PortSelector::Number(number) => ports
            .iter()
            .find(|p| p.port == i32::from(*number))
            .ok_or_else(|| not_found(number.to_string())),
        PortSelector::Name(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| not_found(name.clone())),
        PortSelector::Only => match ports {
            [only] => Ok(only),
            [] => Err(not_found("(none defined)".to_string())),
            _ => Err(BackendError::AmbiguousPort(key.clone())),
        },
    }
}

fn upstream(host: &str, port: impl TryInto<u16>) -> Option<Upstream> {
    let port: u16 = port.try_into().ok()?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    authority
        .parse()
        .ok()
        .map(|authority| Upstream { authority })
}
