//! The cost of verifying one bearer ID token without the cache: parse, ES256 signature, claims.
//! `cargo bench --bench verify_token` reports the time per verification with criterion's
//! confidence interval; the proxy pays it once per token, then a cache lookup.

#[path = "../bench/support/es256.rs"]
mod es256;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use kube_iap::auth::id_token::{Expected, verify_with_keys};
use kube_iap::auth::providers::KeySource;

fn uncached_verification(c: &mut Criterion) {
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
        assume_email_verified: false,
    };
    verify_with_keys(&expected, &token, &keys).expect("the token verifies");
    c.bench_function("uncached ES256 ID token verification", |b| {
        b.iter(|| verify_with_keys(&expected, black_box(&token), &keys).expect("verifies"))
    });
}

criterion_group!(benches, uncached_verification);
criterion_main!(benches);
