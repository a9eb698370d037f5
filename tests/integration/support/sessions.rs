//! Session cookies minted with a known key, as kube-iap would after a sign-in.

use kube_iap::auth::session::{KeyRing, Session};

/// A verified-email session for `email` with `groups`, valid for `seconds` from now (negative:
/// already expired), sealed with `key` for `host`, as a `Cookie` header value.
pub fn cookie(key: [u8; 32], host: &str, email: &str, groups: &[&str], seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let session = Session {
        subject: format!("sub-{email}"),
        email: Some(email.into()),
        email_verified: true,
        issuer: "https://idp.test".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        expires_at: (now + seconds) as u64,
    };
    let sealed = KeyRing::new(&[key])
        .seal(&session, host)
        .expect("the session fits");
    format!("KUBE_IAP_AUTH_TOKEN_t={sealed}")
}
