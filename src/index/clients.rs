//! OAuthClient validation: what can be checked without talking to the identity provider.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::status::{ComputedStatus, Problem};
use super::{Kind, ObjectKey};
use crate::api::OAuthClient;
use crate::error_codes::ErrorCode;

/// The OAuthClient's usability as policies see it.
pub type ClientHealth = Result<(), Problem>;

pub fn evaluate(
    key: &ObjectKey,
    client: &OAuthClient,
    secrets: &BTreeMap<ObjectKey, Secret>,
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
                Some(Some(secret)) => secret_sha256 = Some(sha256_hex(secret)),
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
    let health = match problems.into_iter().find(|problem| problem.code.is_some()) {
        Some(problem) => Err(problem),
        None => Ok(()),
    };
    (health, status)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
