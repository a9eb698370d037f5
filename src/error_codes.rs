//! The one table of error codes. Status messages, error pages, the tunnel client and the docs all
//! read it, so a code means the same thing wherever a user meets it. The numbers are Google IAP's,
//! so its troubleshooting guides apply.

use serde::Serialize;

/// An error code a user can look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ErrorCode {
    /// OAuth client ID or secret empty, or its Secret missing.
    OAuthClientCredentialsMissing,
    /// The OAuth redirect did not complete, or policies on one host disagree on the OAuth client.
    OAuthFlowFailed,
    /// The OAuth client is incorrectly configured at the identity provider.
    OAuthClientMisconfigured,
    /// An OIDC token is invalid, or a policy names an OAuthClient that does not exist.
    InvalidToken,
    /// The upstream's TLS certificate does not match its name.
    UpstreamTlsNameMismatch,
    /// The policy's rate limit is exceeded.
    RateLimited,
    /// Tunnel: the backend is not reachable on that port.
    TunnelBackendUnreachable,
    /// Tunnel: re-authentication required.
    TunnelReauthenticate,
    /// Tunnel: not authorized, or no such target.
    TunnelNotAuthorized,
    /// Tunnel: the target does not exist or has no ready endpoints.
    TunnelTargetNotFound,
}

/// What a code means and what to do about it.
pub struct CodeInfo {
    pub code: ErrorCode,
    pub number: u32,
    pub title: &'static str,
    pub remedy: &'static str,
}

/// Every code, in number order.
pub const TABLE: &[CodeInfo] = &[
    CodeInfo {
        code: ErrorCode::OAuthClientCredentialsMissing,
        number: 7,
        title: "The OAuth client ID or secret is empty, or its Secret is missing.",
        remedy: "Set spec.clientId on the OAuthClient and make spec.clientSecretRef name an existing Secret key with a non-empty value.",
    },
    CodeInfo {
        code: ErrorCode::OAuthFlowFailed,
        number: 9,
        title: "The OAuth sign-in did not complete, or policies on one host use different OAuth clients.",
        remedy: "Retry the sign-in from the original URL; if this is a status, make every IapPolicy on the host use the same OAuthClient.",
    },
    CodeInfo {
        code: ErrorCode::OAuthClientMisconfigured,
        number: 11,
        title: "The OAuth client is incorrectly configured.",
        remedy: "Check the OAuthClient's issuer (its discovery document must load) and that the identity provider accepts its client ID and secret.",
    },
    CodeInfo {
        code: ErrorCode::InvalidToken,
        number: 13,
        title: "The OIDC token is invalid, or the policy names an OAuthClient that does not exist.",
        remedy: "Send an ID token issued for this OAuth client, or create the OAuthClient the IapPolicy's oauthClientRef names.",
    },
    CodeInfo {
        code: ErrorCode::UpstreamTlsNameMismatch,
        number: 52,
        title: "The backend's TLS certificate does not match its name.",
        remedy: "Serve a certificate for the Service's name from the backend, or address the backend by a name its certificate holds.",
    },
    CodeInfo {
        code: ErrorCode::RateLimited,
        number: 429,
        title: "Too many requests for this application.",
        remedy: "Wait for the time in Retry-After, or raise spec.rateLimit.requestsPerMinute on the IapPolicy.",
    },
    CodeInfo {
        code: ErrorCode::TunnelBackendUnreachable,
        number: 4003,
        title: "The backend is not reachable on that port.",
        remedy: "Check that the Service's Pods listen on the port and that the port is listed in spec.tcpForwarding.ports.",
    },
    CodeInfo {
        code: ErrorCode::TunnelReauthenticate,
        number: 4004,
        title: "Re-authentication is required.",
        remedy: "Obtain a fresh ID token and reconnect.",
    },
    CodeInfo {
        code: ErrorCode::TunnelNotAuthorized,
        number: 4033,
        title: "Not authorized to open a tunnel to this target.",
        remedy: "Ask for your identity to be added to spec.tcpForwarding.members of the IapPolicy.",
    },
    CodeInfo {
        code: ErrorCode::TunnelTargetNotFound,
        number: 4047,
        title: "The tunnel target does not exist or has no ready endpoints.",
        remedy: "Check the host name and that the Service has ready Pods.",
    },
];

impl ErrorCode {
    pub fn info(self) -> &'static CodeInfo {
        TABLE
            .iter()
            .find(|info| info.code == self)
            .expect("every ErrorCode has a row in TABLE")
    }

    pub fn number(self) -> u32 {
        self.info().number
    }

    /// `Error code N: <title>`, the prefix of every status message and page that carries a code.
    pub fn headline(self) -> String {
        format!("Error code {}: {}", self.number(), self.info().title)
    }
}

/// Where each code shows, for the troubleshooting table.
fn shown_on(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::OAuthClientCredentialsMissing => {
            "OAuthClient and IapPolicy status; sign-in page"
        }
        ErrorCode::OAuthFlowFailed => "sign-in page; IapPolicy status (OAuth client conflict)",
        ErrorCode::OAuthClientMisconfigured => "OAuthClient status; sign-in page",
        ErrorCode::InvalidToken => "401 body for bearer tokens; sign-in page; IapPolicy status",
        ErrorCode::UpstreamTlsNameMismatch => "error page",
        ErrorCode::RateLimited => "429 page with Retry-After",
        ErrorCode::TunnelBackendUnreachable
        | ErrorCode::TunnelReauthenticate
        | ErrorCode::TunnelNotAuthorized
        | ErrorCode::TunnelTargetNotFound => {
            "tunnel WebSocket close code; `kube-iap tunnel` message"
        }
    }
}

/// The troubleshooting table as Markdown: what `kube-iap codes` prints and
/// `docs/troubleshooting.md` holds (a test keeps them equal).
pub fn troubleshooting_markdown() -> String {
    let mut out = String::from(
        "# Troubleshooting: kube-iap error codes\n\n\
         Generated by `kube-iap codes` from `src/error_codes.rs`; do not edit by hand. The numbers are\n\
         Google IAP's, so its guides apply too. A code shows in a resource's status (`kubectl get\n\
         iappolicies` prints it in the CODE column, the message starts with `Error code N:`), on the\n\
         page a user sees, or as a tunnel close code.\n\n\
         | code | meaning | where it shows | what to do |\n|---|---|---|---|\n",
    );
    for row in TABLE {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.number,
            row.title,
            shown_on(row.code),
            row.remedy
        ));
    }
    out
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_exactly_one_row_and_numbers_are_unique() {
        let numbers: Vec<u32> = TABLE.iter().map(|row| row.number).collect();
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "numbers are unique and sorted"
        );
        for row in TABLE {
            assert_eq!(
                TABLE.iter().filter(|other| other.code == row.code).count(),
                1
            );
        }
    }

    #[test]
    fn headline_starts_with_the_google_number() {
        assert!(
            ErrorCode::OAuthClientCredentialsMissing
                .headline()
                .starts_with("Error code 7: ")
        );
        assert!(
            ErrorCode::InvalidToken
                .headline()
                .starts_with("Error code 13: ")
        );
        assert_eq!(ErrorCode::TunnelTargetNotFound.number(), 4047);
    }
}
