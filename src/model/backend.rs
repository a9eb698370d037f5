//! Where a route forwards: the ready endpoints of a Service port, balanced round-robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

/// One upstream address, ready to put in a request URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub authority: Authority,
}

/// The resolved backend of a route.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs, pages and metrics.
    pub name: String,
    pub upstreams: Vec<Upstream>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: String, upstreams: Vec<Upstream>) -> Self {
        Backend {
            name,
            upstreams,
            next: AtomicUsize::new(0),
        }
    }

    /// The next upstream in round-robin order; `None` when the Service has no ready endpoint.
    pub fn pick(&self) -> Option<&Upstream> {
        self.pick_index().map(|index| &self.upstreams[index])
    }

    /// The index in `upstreams` of the next upstream, for a caller that keeps the backend.
    pub fn pick_index(&self) -> Option<usize> {
        if self.upstreams.is_empty() {
            return None;
        }
        // Relaxed is enough: the counter only spreads load, it orders nothing.
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(turn % self.upstreams.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(authority: &str) -> Upstream {
        Upstream {
            authority: authority.parse().expect("valid authority"),
        }
    }

    #[test]
    fn picks_rotate_over_every_endpoint() {
        let backend = Backend::new(
            "ns/svc:80".into(),
            vec![upstream("10.0.0.1:80"), upstream("10.0.0.2:80")],
        );
        let picks: Vec<String> = (0..4)
            .map(|_| backend.pick().expect("has endpoints").authority.to_string())
            .collect();
        assert_eq!(
            picks,
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]
        );
    }

    #[test]
    fn no_endpoints_picks_nothing() {
        assert!(Backend::new("ns/svc:80".into(), vec![]).pick().is_none());
    }
}
