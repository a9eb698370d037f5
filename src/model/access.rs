//! Who a route admits: members and the policy's rule lists. The decision itself is
//! [`AccessPolicy::evaluate`] in `policy.rs`.

use std::fmt;
use std::str::FromStr;

use super::AccessRule;

/// A member of an access list, parsed from its `kind:value` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    User(String),
    Group(String),
    Domain(String),
    ServiceAccount { namespace: String, name: String },
    AllAuthenticatedUsers,
    AllUsers,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid member {member:?}: {reason}")]
pub struct MemberParseError {
    pub member: String,
    pub reason: &'static str,
}

impl FromStr for Member {
    type Err = MemberParseError;

    fn from_str(member: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| MemberParseError {
            member: member.to_string(),
            reason,
        };
        match member {
            "allUsers" => return Ok(Member::AllUsers),
            "allAuthenticatedUsers" => return Ok(Member::AllAuthenticatedUsers),
            _ => {}
        }
        let (kind, value) = member
            .split_once(':')
            .ok_or_else(|| invalid("expected KIND:VALUE, allAuthenticatedUsers or allUsers"))?;
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(invalid("the value must be non-empty and contain no spaces"));
        }
        match kind {
            "user" => {
                let (local, domain) = value
                    .split_once('@')
                    .ok_or_else(|| invalid("a user is an email address"))?;
                if local.is_empty() || domain.is_empty() || domain.contains('@') {
                    return Err(invalid("a user is an email address with exactly one '@'"));
                }
                Ok(Member::User(value.to_ascii_lowercase()))
            }
            "group" => Ok(Member::Group(value.to_string())),
            "domain" => {
                if value.contains('@') || !value.contains('.') {
                    return Err(invalid("a domain is a DNS name such as example.com"));
                }
                Ok(Member::Domain(value.to_ascii_lowercase()))
            }
            "serviceAccount" => {
                let (namespace, name) = value
                    .split_once('/')
                    .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
                    .ok_or_else(|| invalid("a service account is NAMESPACE/NAME"))?;
                Ok(Member::ServiceAccount {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(invalid(
                "the kind must be user, group, domain or serviceAccount",
            )),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::User(email) => write!(f, "user:{email}"),
            Member::Group(group) => write!(f, "group:{group}"),
            Member::Domain(domain) => write!(f, "domain:{domain}"),
            Member::ServiceAccount { namespace, name } => {
                write!(f, "serviceAccount:{namespace}/{name}")
            }
            Member::AllAuthenticatedUsers => f.write_str("allAuthenticatedUsers"),
            Member::AllUsers => f.write_str("allUsers"),
        }
    }
}

/// The access rules of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// `spec.access`: a request is allowed when one of these applies...
    pub rules: Vec<AccessRule>,
    /// ...and none of `spec.deny` does.
    pub deny: Vec<AccessRule>,
    /// Path prefixes forwarded without identity.
    pub public_paths: Vec<String>,
    /// Forward CORS preflights without authentication (`cors.allowHttpOptions`).
    pub allow_http_options: bool,
}

impl AccessPolicy {
    /// Whether `path` is one of the policy's public paths, forwarded with no identity at all.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths
            .iter()
            .any(|prefix| super::path::has_prefix(path, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_print_back() {
        for text in [
            "user:alice@example.com",
            "group:admins",
            "domain:example.com",
            "serviceAccount:ci/deployer",
            "allAuthenticatedUsers",
            "allUsers",
        ] {
            let member: Member = text.parse().expect(text);
            assert_eq!(member.to_string(), text);
        }
        assert_eq!(
            "user:Alice@Example.COM".parse(),
            Ok(Member::User("alice@example.com".into()))
        );
    }

    #[test]
    fn malformed_members_are_rejected() {
        for text in [
            "alice@example.com",
            "user:alice",
            "user:a@b@c.com",
            "user:@example.com",
            "domain:a@example.com",
            "domain:localhost",
            "serviceAccount:ci",
            "serviceAccount:ci/a/b",
            "group:",
            "role:admin",
            "user:alice @example.com",
        ] {
            assert!(text.parse::<Member>().is_err(), "{text} must be rejected");
        }
    }

    #[test]
    fn public_paths_match_segment_by_segment() {
        let public = AccessPolicy {
            public_paths: vec!["/health".into()],
            ..AccessPolicy::default()
        };
        assert!(public.is_public("/health/live"));
        assert!(public.is_public("/health"));
        assert!(!public.is_public("/healthz"));
    }
}
