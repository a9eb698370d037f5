//! Attaching every route, in the spec's order, to the served Gateways; reusing how a route
//! attached in the last build while nothing it depends on changed. At 10,000 HTTPRoutes a build
//! after one change otherwise attached, protected and wrote the status of every route again.
//!
//! A route's attachment depends on the route and its translated rules (the same `Arc` as last
//! time means neither changed, see `reuse`), on its place in the order (its rank), and on the
//! world around it: Gateways and their classes, Secrets (listener certificates),
//! ReferenceGrants, Namespaces (listener selectors) and IapPolicies (their `targetRefs`). A
//! change to any object of those kinds attaches every route again.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use super::attachment::{self, Targets};
use super::conditions::Cond;
use super::listeners::ServedGateway;
use super::reuse::{self, RuleMap};
use super::routes::{self, GatewayRoute, RouteEntries, RouteKind, Rule};
use super::statuses;
use crate::api::gateway::ParentReference;
use crate::index::{ComputedStatus, Index, Kind, ObjectKey};

/// The kinds whose objects every route's attachment reads.
const WORLD_KINDS: [Kind; 6] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::Secret,
    Kind::ReferenceGrant,
    Kind::Namespace,
    Kind::IapPolicy,
];

/// The revisions of what every attachment reads.
#[derive(Clone, Copy, PartialEq, Eq)]
struct World {
    epoch: u64,
    kinds: [u64; WORLD_KINDS.len()],
}

impl World {
    fn of(index: &Index) -> Self {
        World {
            epoch: index.revisions.epoch(),
            kinds: WORLD_KINDS.map(|kind| index.revisions.kind(kind)),
        }
    }
}

/// How a route attached in a build.
pub struct CachedAttachment {
    world: World,
    rank_base: u64,
    rules: Arc<Vec<Rule>>,
    entries: Arc<RouteEntries>,
    /// (gateway, listener) positions it attached to.
    listeners: Vec<(usize, usize)>,
    /// Some parent accepted it.
    accepted: bool,
    /// A digest of its outcome at each parent, and the status written from it; `None` when
    /// no parent is a Gateway of kube-iap's. (A digest, not the outcome: at 10,000 routes the
    /// conditions' copies were megabytes, and a collision would at worst leave one status
    /// stale until the route's next change.)
    status: Option<(u64, ComputedStatus)>,
}

fn digest(parents: &[(ParentReference, Vec<Cond>)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parents.hash(&mut hasher);
    hasher.finish()
}

pub type AttachmentMap = HashMap<(RouteKind, ObjectKey), CachedAttachment>;

/// What attaching every route produced.
pub struct Attached {
    /// Table entries, route by route.
    pub entries: Vec<Arc<RouteEntries>>,
    pub statuses: Vec<ComputedStatus>,
    /// Routes some listener accepted.
    pub routes: HashSet<(RouteKind, ObjectKey)>,
}

/// Attaching routes of every kind, in order, to the served Gateways.
pub struct RouteAttachment<'a> {
    index: &'a Index,
    targets: &'a Targets<'a>,
    gateways: &'a mut [ServedGateway],
    world: World,
    /// The rank of the next route's first entry.
    rank_base: u64,
    last_rules: RuleMap,
    rules_now: RuleMap,
    last: AttachmentMap,
    now: AttachmentMap,
    attached: Attached,
}

impl<'a> RouteAttachment<'a> {
    pub fn new(
        index: &'a Index,
        targets: &'a Targets<'a>,
        gateways: &'a mut [ServedGateway],
    ) -> Self {
        let (last_rules, last) = index.gateway_rules.take();
        RouteAttachment {
            index,
            targets,
            gateways,
            world: World::of(index),
            rank_base: 0,
            last_rules,
            rules_now: RuleMap::default(),
            last,
            now: AttachmentMap::default(),
            attached: Attached {
                entries: Vec::new(),
                statuses: Vec::new(),
                routes: HashSet::default(),
            },
        }
    }

    /// Attaches every route of one kind, oldest first, then by name: the spec's tie-break
    /// between equally specific rules.
    pub fn attach_all<R: GatewayRoute>(&mut self, routes: &BTreeMap<ObjectKey, Box<R>>) {
        let mut routes: Vec<_> = routes.iter().collect();
        routes.sort_by(|(a_key, a), (b_key, b)| {
            super::oldest_first(a.meta(), b.meta()).then_with(|| a_key.cmp(b_key))
        });
        for (key, route) in routes {
            let rules = reuse::rules_of(
                self.index,
                &mut self.last_rules,
                &mut self.rules_now,
                key,
                route.as_ref(),
            );
            let rank_base = self.rank_base;
            // Room for every match of every rule: at most 16 rules of 64 matches each.
            self.rank_base += 1 + 16 * 64;
            let cache_key = (R::KIND, key.clone());
            let cached = match self.last.remove(&cache_key) {
                Some(last)
                    if last.world == self.world
                        && last.rank_base == rank_base
                        && Arc::ptr_eq(&last.rules, &rules) =>
                {
                    last
                }
                last => self.attach_anew(key, route.as_ref(), rules, rank_base, last),
            };
            for &(gateway, listener) in &cached.listeners {
                self.gateways[gateway].listeners[listener].attached_routes += 1;
            }
            if cached.accepted {
                self.attached.routes.insert((R::KIND, key.clone()));
            }
            if !cached.entries.entries.is_empty() {
                self.attached.entries.push(cached.entries.clone());
            }
            if let Some((_, status)) = &cached.status {
                self.attached.statuses.push(status.clone());
            }
            self.now.insert(cache_key, cached);
        }
    }

    fn attach_anew<R: GatewayRoute>(
        &self,
        key: &ObjectKey,
        route: &R,
        rules: Arc<Vec<Rule>>,
        rank_base: u64,
        last: Option<CachedAttachment>,
    ) -> CachedAttachment {
        let mut entries = Vec::new();
        let mut listeners = Vec::new();
        let outcomes = routes::attach(
            self.index,
            &route.view(key),
            &rules,
            self.gateways,
            rank_base,
            &mut entries,
            &mut listeners,
        );
        let mut accepted = false;
        let mut status = None;
        if !outcomes.is_empty() {
            let mut parents = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                accepted |= outcome.accepted.holds;
                let entries = &mut entries[outcome.entries.clone()];
                parents.push(attachment::protect(self.targets, entries, outcome));
            }
            let generation = route.meta().generation;
            let outcome = digest(&parents);
            // The same outcome as last time (another route changed): the same text.
            let computed = match last.and_then(|last| last.status) {
                Some((last_outcome, last_status))
                    if last_outcome == outcome && last_status.observed_generation == generation =>
                {
                    last_status
                }
                _ => statuses::route_status(R::KIND.index_kind(), key, generation, &parents),
            };
            status = Some((outcome, computed));
        }
        CachedAttachment {
            world: self.world,
            rank_base,
            rules,
            entries: Arc::new(RouteEntries {
                entries,
                table_routes: Default::default(),
            }),
            listeners,
            accepted,
            status,
        }
    }

    /// What the routes produced; the caches are kept for the next build.
    pub fn finish(self) -> Attached {
        self.index.gateway_rules.put(self.rules_now, self.now);
        self.attached
    }
}

/// The status text a route got in the build that made `attachments`.
pub fn computed_status(
    attachments: &AttachmentMap,
    kind: RouteKind,
    key: &ObjectKey,
) -> Option<Arc<str>> {
    let cached = attachments.get(&(kind, key.clone()))?;
    cached.status.as_ref()?.1.api_status.clone()
}
