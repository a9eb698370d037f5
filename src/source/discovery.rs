//! Which Gateway API kinds the cluster serves. A kind whose CRD is not installed is not
//! watched (its watch would fail forever and hold the first table back); it counts as listed
//! and empty. Each kind is asked about on its own, so a cluster with an older Gateway API
//! (no GRPCRoute before v1.1) still gets Gateways and HTTPRoutes. CRDs installed later are
//! found by asking again now and then: no restart is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::mpsc;

use super::kube::api_resource;
use crate::index::Kind;

/// How often the kinds not served yet are asked about again.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The Gateway API kinds the cluster serves now. An API server that cannot be reached is
/// waited for (not knowing would mean guessing), as the watches would wait.
pub async fn served_gateway_kinds(client: &kube::Client) -> BTreeSet<Kind> {
    let mut wait = Duration::from_secs(1);
    loop {
        match ask(client).await {
            Ok(served) => return served,
            Err(error) => {
                tracing::warn!(%error, retry_in_secs = wait.as_secs(), "cannot ask the API server which Gateway API kinds it serves");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Asks again every `interval` about the kinds not in `served`, and sends each newly served
/// set; ends once every kind is served or the receiver is gone.
pub async fn watch_for_new_kinds(
    client: kube::Client,
    mut served: BTreeSet<Kind>,
    interval: Duration,
    found: mpsc::Sender<BTreeSet<Kind>>,
) {
    while served.len() < Kind::GATEWAY_API.len() {
        tokio::time::sleep(interval).await;
        let Ok(now) = ask(&client).await else {
            continue;
        };
        let new: BTreeSet<Kind> = now.difference(&served).copied().collect();
        if new.is_empty() {
            continue;
        }
        served.extend(new.iter().copied());
        if found.send(new).await.is_err() {
            return;
        }
    }
}

async fn ask(client: &kube::Client) -> Result<BTreeSet<Kind>, kube::Error> {
    let mut by_version: BTreeMap<String, Vec<(Kind, String)>> = BTreeMap::new();
    for kind in Kind::GATEWAY_API {
        let resource = api_resource(kind);
        by_version
            .entry(resource.api_version)
            .or_default()
            .push((kind, resource.plural));
    }
    let mut served = BTreeSet::new();
    for (version, kinds) in by_version {
        let listed = match client.list_api_group_resources(&version).await {
            Ok(list) => list.resources,
            // The group version is not served at all.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        };
        for (kind, plural) in kinds {
            if listed.iter().any(|resource| resource.name == plural) {
                served.insert(kind);
            }
        }
    }
    Ok(served)
}

/// The kinds to watch for the Gateway API kinds `served`: those, and Namespaces (for their
/// labels) once Gateways are among them.
pub fn kinds_to_watch(served: &BTreeSet<Kind>) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = served.iter().copied().collect();
    if served.contains(&Kind::Gateway) {
        kinds.push(Kind::Namespace);
    }
    kinds
}
