//! Request ids: unique per process run without a random draw per request.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

pub struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut prefix = [0u8; 4];
        // A failed draw only makes ids less unique across restarts; it is not a security property.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix);
        RequestIds {
            prefix: u32::from_be_bytes(prefix),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id, ready to send as a header (hex digits only, so always a valid value).
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let text = format!("{:08x}{:012x}", self.prefix, n);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_and_fixed_length() {
        let ids = super::RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
    }
}
