//! The metric series of each route, resolved once per worker. Finding a series by its labels
//! hashes them with SipHash under a lock shared by every thread; the proxy did that twice per
//! request. Each worker keeps the handles it has resolved instead.

use std::sync::Mutex;

use foldhash::HashMap;
use prometheus::{Histogram, IntCounter};

use crate::metrics::Metrics;

/// Routes whose handles one worker keeps; past this (policies come and go) it starts afresh.
const MAX_ROUTES: usize = 4096;

#[derive(Default)]
pub struct RouteMetrics {
    // One worker's lock: its requests run on one thread, so it is never contended.
    routes: Mutex<HashMap<String, Series>>,
}

struct Series {
    upstream_latency: Histogram,
    /// By status code; a route sees a handful of them.
    requests: Vec<(u16, IntCounter)>,
}

impl RouteMetrics {
    /// Counts one answered request of `route` (`-` when none matched) and, when it was
    /// forwarded, how long its upstream took: one lock and one lookup per request.
    pub fn record(
        &self,
        metrics: &Metrics,
        route: &str,
        status: http::StatusCode,
        upstream_seconds: Option<f64>,
    ) {
        let mut routes = self.routes.lock().expect("metrics lock is never poisoned");
        let series = series(&mut routes, metrics, route);
        if let Some(seconds) = upstream_seconds {
            series.upstream_latency.observe(seconds);
        }
        let code = status.as_u16();
        let counter = match series.requests.iter().find(|(known, _)| *known == code) {
            Some((_, counter)) => counter,
            None => {
                let counter = metrics
                    .requests
                    .with_label_values(&[route, status.as_str()]);
                series.requests.push((code, counter));
                &series.requests.last().expect("just pushed").1
            }
        };
        counter.inc();
    }
}

fn series<'a>(
    routes: &'a mut HashMap<String, Series>,
    metrics: &Metrics,
    route: &str,
) -> &'a mut Series {
    if !routes.contains_key(route) {
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        let series = Series {
            upstream_latency: metrics.upstream_latency.with_label_values(&[route]),
            requests: Vec::new(),
        };
        routes.insert(route.to_string(), series);
    }
    routes.get_mut(route).expect("just inserted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_registry_series_of_their_labels() {
        let metrics = Metrics::new();
        let cache = RouteMetrics::default();
        for _ in 0..2 {
            cache.record(&metrics, "ns/a", http::StatusCode::OK, None);
        }
        cache.record(&metrics, "ns/a", http::StatusCode::OK, Some(0.002));
        cache.record(&metrics, "ns/a", http::StatusCode::FORBIDDEN, None);
        cache.record(&metrics, "-", http::StatusCode::NOT_FOUND, None);
        let get =
            |route: &str, status: &str| metrics.requests.with_label_values(&[route, status]).get();
        assert_eq!(get("ns/a", "200"), 3);
        assert_eq!(get("ns/a", "403"), 1);
        assert_eq!(get("-", "404"), 1);
        assert_eq!(
            metrics
                .upstream_latency
                .with_label_values(&["ns/a"])
                .get_sample_count(),
            1
        );
    }

    #[test]
    fn a_full_cache_starts_afresh_without_losing_counts() {
        let metrics = Metrics::new();
        let cache = RouteMetrics::default();
        for i in 0..MAX_ROUTES + 10 {
            cache.record(&metrics, &format!("ns/p{i}"), http::StatusCode::OK, None);
        }
        cache.record(&metrics, "ns/p0", http::StatusCode::OK, Some(0.001));
        assert!(cache.routes.lock().unwrap().len() <= MAX_ROUTES);
        assert_eq!(
            metrics.requests.with_label_values(&["ns/p0", "200"]).get(),
            2
        );
    }
}
