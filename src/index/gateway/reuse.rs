//! Reusing the last build's translated route rules (HTTPRoute and GRPCRoute), as the policies' compilations are
//! reused (`index::reuse`): a route's rules are translated again only when the route, a
//! Service it names (or that Service's EndpointSlices), a policy an `ExtensionRef` names, or
//! any ReferenceGrant changed. A build after one change then translates one route, not 10,000.
//! How a route attached (its entries and status) is reused too, see `attach_routes`.

use std::sync::{Arc, Mutex};

use foldhash::HashMap;

use super::attach_routes::AttachmentMap;
use super::routes::{GatewayRoute, RouteKind, Rule};
use crate::index::reuse::{Read, Seen};
use crate::index::revisions::Revisions;
use crate::index::{Index, Kind, ObjectKey};

/// What translating a route's rules read, with the revision each had then.
pub struct RouteInputs {
    epoch: u64,
    route: u64,
    grants: u64,
    reads: Vec<(Read, Seen)>,
}

impl RouteInputs {
    fn of<R: GatewayRoute>(revisions: &Revisions, key: &ObjectKey, route: &R) -> Self {
        let mut reads = Vec::new();
        for (_, backend_refs, filters) in route.rule_parts() {
            for reference in backend_refs {
                let namespace = reference.namespace.as_deref().unwrap_or(&key.namespace);
                reads.push(Read::Service(ObjectKey::new(namespace, &reference.name)));
            }
            for filter in filters {
                if let Some(reference) = &filter.extension_ref {
                    let policy = ObjectKey::new(&key.namespace, &reference.name);
                    reads.push(Read::Object(Kind::IapPolicy, policy));
                }
            }
        }
        RouteInputs {
            epoch: revisions.epoch(),
            route: revisions.object(R::KIND.index_kind(), key),
            grants: revisions.kind(Kind::ReferenceGrant),
            reads: reads
                .into_iter()
                .map(|read| {
                    let seen = read.seen(revisions);
                    (read, seen)
                })
                .collect(),
        }
    }

    fn still_current(&self, revisions: &Revisions, kind: RouteKind, key: &ObjectKey) -> bool {
        self.epoch == revisions.epoch()
            && self.route == revisions.object(kind.index_kind(), key)
            && self.grants == revisions.kind(Kind::ReferenceGrant)
            && self
                .reads
                .iter()
                .all(|(read, seen)| *seen == read.seen(revisions))
    }
}

pub type RuleMap = HashMap<(RouteKind, ObjectKey), (RouteInputs, Arc<Vec<Rule>>)>;

/// What the last build translated: rules, and how each route attached. Cloning an index
/// starts it without any.
#[derive(Default)]
pub struct TranslatedRules(Mutex<(RuleMap, AttachmentMap)>);

impl Clone for TranslatedRules {
    fn clone(&self) -> Self {
        TranslatedRules::default()
    }
}

impl TranslatedRules {
    pub fn take(&self) -> (RuleMap, AttachmentMap) {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .expect("the rule cache lock is never poisoned"),
        )
    }

    /// The status text the last build computed for a route (`None` for other kinds).
    pub fn computed_status(&self, kind: Kind, key: &ObjectKey) -> Option<Arc<str>> {
        let route_kind = RouteKind::ALL
            .into_iter()
            .find(|route_kind| route_kind.index_kind() == kind)?;
        let caches = self
            .0
            .lock()
            .expect("the rule cache lock is never poisoned");
        super::attach_routes::computed_status(&caches.1, route_kind, key)
    }

    pub fn put(&self, rules: RuleMap, attachments: AttachmentMap) {
        *self
            .0
            .lock()
            .expect("the rule cache lock is never poisoned") = (rules, attachments);
    }
}

/// The rules of `route`: last build's when nothing they read changed, else translated anew.
pub fn rules_of<R: GatewayRoute>(
    index: &Index,
    last: &mut RuleMap,
    now: &mut RuleMap,
    key: &ObjectKey,
    route: &R,
) -> Arc<Vec<Rule>> {
    let revisions = &index.revisions;
    let cache_key = (R::KIND, key.clone());
    let (owned_key, entry) = match last.remove_entry(&cache_key) {
        Some((owned_key, entry)) if entry.0.still_current(revisions, R::KIND, key) => {
            (owned_key, entry)
        }
        _ => {
            let inputs = RouteInputs::of(revisions, key, route);
            let rules = Arc::new(route.translate_rules(index, key));
            (cache_key, (inputs, rules))
        }
    };
    let rules = entry.1.clone();
    now.insert(owned_key, entry);
    rules
}
