//! Which objects changed since a policy was last compiled. Every change to the index stamps the
//! object (and the groupings the build looks objects up by) with a new revision; a policy's
//! compilation is reused only while every revision it read is the same, so a build after one
//! change recompiles the policies that change touches and reuses the rest.

use foldhash::HashMap;

use super::{Kind, ObjectKey};

#[derive(Clone, Default)]
pub(super) struct Revisions {
    last: u64,
    objects: HashMap<Kind, HashMap<ObjectKey, u64>>,
    /// Per kind: the revision of its latest change.
    kinds: HashMap<Kind, u64>,
    /// Per Service: stamped when any EndpointSlice labelled with it changes.
    service_slices: HashMap<ObjectKey, u64>,
    /// Stamped by a relist: every compilation is redone.
    epoch: u64,
}

impl Revisions {
    fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// An object was added, replaced (beyond its status) or deleted.
    pub fn object_changed(&mut self, kind: Kind, key: &ObjectKey) {
        let revision = self.next();
        self.kinds.insert(kind, revision);
        self.objects
            .entry(kind)
            .or_default()
            .insert(key.clone(), revision);
    }

    /// An EndpointSlice of `service` was added, replaced or deleted.
    pub fn slices_changed(&mut self, service: ObjectKey) {
        let revision = self.next();
        self.service_slices.insert(service, revision);
    }

    pub fn relisted(&mut self) {
        self.epoch = self.next();
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn object(&self, kind: Kind, key: &ObjectKey) -> u64 {
        self.objects
            .get(&kind)
            .and_then(|revisions| revisions.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// The revision of the latest change to any object of `kind`.
    pub fn kind(&self, kind: Kind) -> u64 {
        self.kinds.get(&kind).copied().unwrap_or(0)
    }

    pub fn slices_of(&self, service: &ObjectKey) -> u64 {
        self.service_slices.get(service).copied().unwrap_or(0)
    }
}
