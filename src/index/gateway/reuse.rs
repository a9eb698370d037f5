//! Reusing the last build's translated HTTPRoute rules, as the policies' compilations are
//! reused (`index::reuse`): a route's rules are translated again only when the route, a
//! Service it names (or that Service's EndpointSlices), a policy an `ExtensionRef` names, or
//! any ReferenceGrant changed. A build after one change then translates one route, not 10,000.

use std::sync::{Arc, Mutex};

use foldhash::HashMap;

use super::routes::Rule;
use crate::api::gateway::HTTPRoute;
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
    fn of(revisions: &Revisions, key: &ObjectKey, route: &HTTPRoute) -> Self {
        let mut reads = Vec::new();
        for rule in &route.spec.rules {
            for reference in &rule.backend_refs {
                let namespace = reference.namespace.as_deref().unwrap_or(&key.namespace);
                reads.push(Read::Service(ObjectKey::new(namespace, &reference.name)));
            }
            for filter in &rule.filters {
                if let Some(reference) = &filter.extension_ref {
                    let policy = ObjectKey::new(&key.namespace, &reference.name);
                    reads.push(Read::Object(Kind::IapPolicy, policy));
                }
            }
        }
        RouteInputs {
            epoch: revisions.epoch(),
            route: revisions.object(Kind::HttpRoute, key),
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

    fn still_current(&self, revisions: &Revisions, key: &ObjectKey) -> bool {
        self.epoch == revisions.epoch()
            && self.route == revisions.object(Kind::HttpRoute, key)
            && self.grants == revisions.kind(Kind::ReferenceGrant)
            && self
                .reads
                .iter()
                .all(|(read, seen)| *seen == read.seen(revisions))
    }
}

pub type RuleMap = HashMap<ObjectKey, (RouteInputs, Arc<Vec<Rule>>)>;

/// The translated rules of the last build. Cloning an index starts it without any.
#[derive(Default)]
pub struct TranslatedRules(Mutex<RuleMap>);

impl Clone for TranslatedRules {
    fn clone(&self) -> Self {
        TranslatedRules::default()
    }
}

impl TranslatedRules {
    pub fn take(&self) -> RuleMap {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .expect("the rule cache lock is never poisoned"),
        )
    }

    pub fn put(&self, rules: RuleMap) {
        *self
            .0
            .lock()
            .expect("the rule cache lock is never poisoned") = rules;
    }
}

/// The rules of `route`: last build's when nothing they read changed, else translated anew.
pub fn rules_of(
    index: &Index,
    last: &mut RuleMap,
    now: &mut RuleMap,
    key: &ObjectKey,
    route: &HTTPRoute,
) -> Arc<Vec<Rule>> {
    let revisions = &index.revisions;
    let (owned_key, entry) = match last.remove_entry(key) {
        Some((owned_key, entry)) if entry.0.still_current(revisions, key) => (owned_key, entry),
        _ => {
            let inputs = RouteInputs::of(revisions, key, route);
            let rules = Arc::new(super::routes::translate_rules(index, key, route));
            (key.clone(), (inputs, rules))
        }
    };
    let rules = entry.1.clone();
    now.insert(owned_key, entry);
    rules
}
