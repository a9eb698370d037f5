//! A bounded map of credentials already checked, by their text, each until it expires: what the
//! bearer-token and session-cookie caches share.

use foldhash::HashMap;

pub struct Expiring<V> {
    entries: HashMap<Box<str>, (V, u64)>,
    capacity: usize,
}

impl<V> Expiring<V> {
    pub fn new(capacity: usize) -> Self {
        Expiring {
            entries: HashMap::default(),
            capacity,
        }
    }

    /// The entry for `key` and when it expires, unless it has expired at `now`.
    pub fn get(&self, key: &str, now: u64) -> Option<(&V, u64)> {
        let (value, expires_at) = self.entries.get(key)?;
        (*expires_at > now).then_some((value, *expires_at))
    }

    pub fn insert(&mut self, key: &str, value: V, expires_at: u64, now: u64) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, expiry)| *expiry > now);
            if self.entries.len() >= self.capacity {
                // Still full of live entries: start over rather than grow without bound.
                self.entries.clear();
            }
        }
        self.entries.insert(key.into(), (value, expires_at));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
