//! Mints a session cookie with a given key, as kube-iap would after a sign-in. For benchmarks and
//! debugging against a local manifests folder; never needed in production.
//!
//! `cargo run --example mint_session -- KEY_BASE64 HOST EMAIL [SECONDS]`

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use kube_iap::auth::session::{KeyRing, Session};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, host, email, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: mint_session KEY_BASE64 HOST EMAIL [SECONDS]");
    };
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key.trim())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("the key must be 32 bytes"))?;
    let lifetime: u64 = rest.first().map_or(Ok(3600), |s| s.parse())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let session = Session {
        subject: format!("local:{email}"),
        email: Some(email.clone()),
        email_verified: true,
        issuer: "mint_session".into(),
        groups: vec![],
        expires_at: now + lifetime,
    };
    let value = KeyRing::new(&[key])
        .seal(&session, host)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("KUBE_IAP_AUTH_TOKEN_bench={value}");
    Ok(())
}
