//! Request ids: unique per process run without a random draw per request.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};

/// The header that carries the request id to the upstream and back to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        // Written by hand: `format!` was a tenth of the proxy's own work per request.
        let mut text = [0u8; 20];
        let digits = (u128::from(self.prefix) << 48) | u128::from(n & 0xffff_ffff_ffff);
        for (i, byte) in text.iter_mut().enumerate() {
            let nibble = (digits >> (4 * (19 - i))) & 0xf;
            *byte = b"0123456789abcdef"[nibble as usize];
        }
        HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
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
        // The same text as `format!("{:08x}{:012x}")` would write.
        let prefix = format!("{:08x}", ids.prefix);
        assert_eq!(a.to_str().unwrap(), format!("{prefix}{:012x}", 0));
        assert_eq!(b.to_str().unwrap(), format!("{prefix}{:012x}", 1));
    }
}
