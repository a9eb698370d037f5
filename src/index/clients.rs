//! OAuthClient validation: what can be checked without talking to the identity provider.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::status::{ComputedStatus, Problem};
use super::{Kind, ObjectKey};
use crate::api::OAuthClient;
use crate::error_codes::ErrorCode;
use crate::model::{ClientSecret, OidcClient, TrustedIssuer};

/// The OAuthClient as policies see it: usable, with its secret resolved, or the problem.
pub type ClientHealth = Result<Arc<OidcClient>, Problem>;

pub fn evaluate(
    key: &ObjectKey,
    client: &OAuthClient,
    secrets: &BTreeMap<ObjectKey, Box<Secret>>,
) -> (ClientHealth, ComputedStatus) {
    let missing = |detail: String| {
        Problem::new(
            "ClientCredentialsMissing",
            Some(ErrorCode::OAuthClientCredentialsMissing),
            detail,
        )
    };
    let mut problems = Vec::new();
    if client.spec.issuer.trim().is_empty() {
        problems.push(Problem::new(
            "InvalidIssuer",
            Some(ErrorCode::OAuthClientMisconfigured),
            "spec.issuer is empty.",
        ));
    }
    if client.spec.client_id.trim().is_empty() {
        problems.push(missing("spec.clientId is empty.".to_string()));
    }
    let mut secret_sha256 = None;
    let mut secret_value = None;
    match &client.spec.client_secret_ref {
        None => problems.push(missing("spec.clientSecretRef is not set.".to_string())),
        Some(reference) => {
            let secret_key = ObjectKey::new(&key.namespace, &reference.name);
            let value = secrets.get(&secret_key).map(|secret| {
                secret
                    .data
                    .as_ref()
                    .and_then(|data| data.get(&reference.key))
                    .map(|bytes| bytes.0.as_slice())
            });
            match value {
                None => problems.push(missing(format!("Secret {secret_key} does not exist."))),
                Some(None) => problems.push(missing(format!(
                    "Secret {secret_key} has no key {:?}.",
                    reference.key
                ))),
                Some(Some([])) => problems.push(missing(format!(
                    "Secret {secret_key} key {:?} is empty.",
                    reference.key
                ))),
                Some(Some(secret)) => match std::str::from_utf8(secret) {
                    Ok(text) => {
                        secret_sha256 = Some(sha256_hex(secret));
                        secret_value = Some(ClientSecret::new(text.trim_end_matches(['\r', '\n'])));
                    }
                    Err(_) => problems.push(missing(format!(
                        "Secret {secret_key} key {:?} is not UTF-8 text.",
                        reference.key
                    ))),
                },
            }
        }
    }
    let mut status = ComputedStatus::from_problems(
        Kind::OAuthClient,
        key.clone(),
        client.metadata.generation,
        &problems,
        format!(
            "Client {:?} at {} is configured.",
            client.spec.client_id, client.spec.issuer
        ),
    );
    status.client_secret_sha256 = secret_sha256;
    let health = match (
        problems.into_iter().find(|problem| problem.code.is_some()),
        secret_value,
    ) {
        (Some(problem), _) => Err(problem),
        (None, Some(client_secret)) => Ok(Arc::new(crate::auth::bearer::with_verification_scope(
            OidcClient {
                name: key.to_string(),
                issuer: client.spec.issuer.trim().to_string(),
                client_id: client.spec.client_id.trim().to_string(),
                client_secret,
                scopes: client.spec.scopes.clone(),
                groups_claim: client.spec.groups_claim.clone(),
                audiences: client.spec.audiences.clone(),
                trusted_issuers: client
                    .spec
                    .trusted_issuers
                    .iter()
                    .map(|trusted| TrustedIssuer {
                        issuer: trusted.issuer.trim().to_string(),
                        jwks_uri: trusted.jwks_uri.clone(),
                        audiences: trusted.audiences.clone(),
                    })
                    .collect(),
                assume_email_verified: client.spec.assume_email_verified,
                verification_scope: [0; 32],
            },
        ))),
        (None, None) => unreachable!("a client without a secret always has a coded problem"),
    };
    (health, status)
}

/// A client no IapPolicy names is never used to sign anyone in, so its issuer and credentials
/// are not checked (discovery and the credentials probe follow the routes). Its status says so
/// rather than let "configured" pass for "checked".
pub fn mark_unused(status: &mut ComputedStatus) {
    if status.ready {
        status.reason = "NotInUse".to_string();
        status.message.push_str(
            " No IapPolicy in this namespace uses it yet, so its issuer and credentials have not \
             been checked; they are as soon as one does.",
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
