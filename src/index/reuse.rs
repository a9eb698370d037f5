//! Reusing the last build's compiled policies. A compilation records every object it read (or
//! looked for and did not find) with the revision that object had; the next build reuses it
//! while each of those revisions is unchanged. Checking that costs a few lookups with keys the
//! record already owns, so a build after one change at 10,000 policies allocates nothing for
//! the policies the change did not touch.

use std::sync::{Arc, Mutex};

use foldhash::HashMap;

use super::build::{CompiledPolicy, World};
use super::ingress::IngressPath;
use super::revisions::Revisions;
use super::{Kind, ObjectKey};
use crate::api::IapPolicy;

/// The compiled policies of the last build, by policy, with what each was compiled from.
/// Cloning an index starts it without any (the next build compiles everything).
#[derive(Default)]
pub(super) struct CompiledPolicies(Mutex<CompiledMap>);

pub(super) type CompiledMap = HashMap<ObjectKey, (Inputs, Arc<CompiledPolicy>)>;

impl Clone for CompiledPolicies {
    fn clone(&self) -> Self {
        CompiledPolicies::default()
    }
}

impl CompiledPolicies {
    pub(super) fn take(&self) -> CompiledMap {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .expect("the compile cache lock is never poisoned"),
        )
    }

    pub(super) fn put(&self, compiled: CompiledMap) {
        *self
            .0
            .lock()
            .expect("the compile cache lock is never poisoned") = compiled;
    }
}

/// One lookup a compilation made.
#[derive(PartialEq)]
pub(super) enum Read {
    Object(Kind, ObjectKey),
    /// A Service and the EndpointSlices labelled with it.
    Service(ObjectKey),
}

/// The revisions a read saw: the object's, and for a Service its EndpointSlices'.
pub(super) type Seen = (u64, u64);

/// Everything a policy's compilation read, with the revision each had then.
pub(super) struct Inputs {
    epoch: u64,
    /// The policy's own revision.
    policy: u64,
    reads: Vec<(Read, Seen)>,
    /// The Services annotated with the policy: one annotated or no longer annotated changes
    /// this list without changing any revision the policy read.
    annotated: Vec<ObjectKey>,
    /// The paths of served Ingresses that name the policy.
    ingress_paths: Vec<IngressPath>,
}

impl Read {
    pub(super) fn seen(&self, revisions: &Revisions) -> Seen {
        match self {
            Read::Object(kind, key) => (revisions.object(*kind, key), 0),
            Read::Service(service) => (
                revisions.object(Kind::Service, service),
                revisions.slices_of(service),
            ),
        }
    }
}

impl Inputs {
    /// What compiling `policy` reads in `world`.
    pub(super) fn of(world: &World<'_>, key: &ObjectKey, policy: &IapPolicy) -> Self {
        let index = world.index;
        let spec = &policy.spec;
        let in_namespace = |name: &str| ObjectKey::new(&key.namespace, name);
        let mut reads = Vec::with_capacity(4);
        let client_key = in_namespace(&spec.oauth_client_ref.name);
        let client_secret = index
            .clients
            .get(&client_key)
            .and_then(|client| client.spec.client_secret_ref.as_ref())
            .map(|secret| in_namespace(&secret.name));
        reads.push(Read::Object(Kind::OAuthClient, client_key));
        reads.extend(client_secret.map(|secret| Read::Object(Kind::Secret, secret)));
        if let Some(tls) = &spec.tls {
            reads.push(Read::Object(Kind::Secret, in_namespace(&tls.secret_name)));
        }
        if let Some(backend) = &spec.backend {
            reads.push(Read::Service(in_namespace(&backend.service)));
        }
        let annotated: Vec<ObjectKey> = world.annotated_keys(key).cloned().collect();
        reads.extend(annotated.iter().cloned().map(Read::Service));
        let ingress_paths = world.ingress_paths_of(key).to_vec();
        for path in &ingress_paths {
            reads.push(Read::Service(path.service.clone()));
            if let Some(secret) = &path.tls_secret {
                reads.push(Read::Object(Kind::Secret, secret.clone()));
            }
        }
        let revisions = &index.revisions;
        let reads = reads
            .into_iter()
            .map(|read| {
                let seen = read.seen(revisions);
                (read, seen)
            })
            .collect();
        Inputs {
            epoch: revisions.epoch(),
            policy: revisions.object(Kind::IapPolicy, key),
            reads,
            annotated,
            ingress_paths,
        }
    }

    /// Whether compiling the policy again in `world` would read exactly the same.
    pub(super) fn still_current(&self, world: &World<'_>, key: &ObjectKey) -> bool {
        let revisions = &world.index.revisions;
        self.epoch == revisions.epoch()
            && self.policy == revisions.object(Kind::IapPolicy, key)
            && self
                .reads
                .iter()
                .all(|(read, seen)| *seen == read.seen(revisions))
            && self.annotated.iter().eq(world.annotated_keys(key))
            && self.ingress_paths == world.ingress_paths_of(key)
    }
}
