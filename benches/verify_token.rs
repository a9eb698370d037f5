//! The cost of verifying one bearer ID token without the cache: parse, ES256 signature, claims.
//! `cargo bench --bench verify_token` prints microseconds per verification (median of rounds).
//! A plain timing loop rather than criterion keeps the dependency tree lean.

#[path = "../bench/support/es256.rs"]
mod es256;

use std::time::Instant;

use kube_iap::auth::id_token::{Expected, verify_with_keys};
use kube_iap::auth::providers::KeySource;

fn main() {
    let issuer = "http://127.0.0.1:18084";
    let pair = es256::key();
    let keys = serde_json::from_value(es256::jwks(&pair)).expect("a key set");
    let token = es256::mint(&pair, &es256::claims(issuer, "bench", 3600));
    let expected = Expected {
        issuer,
        keys: KeySource::Discovery(issuer.into()),
        audiences: vec!["bench"],
        groups_claim: Some("groups"),
        workload: false,
    };
    verify_with_keys(&expected, &token, &keys).expect("the token verifies");
    const PER_ROUND: u32 = 2_000;
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PER_ROUND {
                std::hint::black_box(verify_with_keys(
                    &expected,
                    std::hint::black_box(&token),
                    &keys,
                ))
                .expect("verifies");
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "uncached ES256 ID token verification: {:.1} µs (median of {} rounds of {PER_ROUND}; min {:.1}, max {:.1})",
        rounds[rounds.len() / 2],
        rounds.len(),
        rounds[0],
        rounds[rounds.len() - 1]
    );
}
