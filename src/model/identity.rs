//! Who a request is from, once authenticated, and whether a policy's members admit them.

use super::{AccessPolicy, Member};

/// An authenticated caller, from a session cookie (and later a bearer token).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The provider's stable subject id.
    pub subject: String,
    pub email: Option<String>,
    /// Unverified emails never match `user:` or `domain:` members.
    pub email_verified: bool,
    pub issuer: String,
    pub groups: Vec<String>,
    /// `namespace/name` when the caller is a Kubernetes service account (a workload token).
    pub service_account: Option<String>,
}

impl Identity {
    /// The email if the provider verified it; `None` for anything with more or less than one
    /// `@`. Compared case-insensitively (members are stored lower-cased), so checking a member
    /// allocates nothing: it runs for every rule on every request.
    fn verified_email(&self) -> Option<&str> {
        let email = self.email.as_deref().filter(|_| self.email_verified)?;
        (email.bytes().filter(|byte| *byte == b'@').count() == 1).then_some(email)
    }

    pub fn matches(&self, member: &Member) -> bool {
        match member {
            Member::AllUsers | Member::AllAuthenticatedUsers => true,
            Member::User(wanted) => self
                .verified_email()
                .is_some_and(|email| email.eq_ignore_ascii_case(wanted)),
            Member::Domain(domain) => self.verified_email().is_some_and(|email| {
                email
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
            }),
            Member::Group(group) => self.groups.iter().any(|g| g == group),
            // Only workload tokens carry a service account; a browser session never does.
            Member::ServiceAccount { namespace, name } => {
                self.service_account.as_deref().is_some_and(|account| {
                    account.split_once('/') == Some((namespace.as_str(), name.as_str()))
                })
            }
        }
    }
}

impl AccessPolicy {
    /// The groups some rule names, so sessions keep only those. Deny rules count too: a group
    /// dropped from the session could not be denied.
    pub fn needs_group(&self, group: &str) -> bool {
        self.rules
            .iter()
            .chain(&self.deny)
            .flat_map(|rule| &rule.members)
            .any(|member| matches!(member, Member::Group(g) if g == group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(email: &str, verified: bool) -> Identity {
        Identity {
            subject: "sub-1".into(),
            email: Some(email.into()),
            email_verified: verified,
            issuer: "https://idp.example.com".into(),
            groups: vec!["eng".into()],
            service_account: None,
        }
    }

    fn member(text: &str) -> Member {
        text.parse().expect("valid member")
    }

    #[test]
    fn members_match_as_the_policy_language_says() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("user:alice@corp.com", "alice@corp.com", true, true),
            ("user:alice@corp.com", "Alice@CORP.com", true, true),
            ("user:alice@corp.com", "alice@corp.com", false, false),
            ("user:alice@corp.com", "bob@corp.com", true, false),
            ("domain:corp.com", "alice@corp.com", true, true),
            ("domain:corp.com", "alice@corp.com", false, false),
            ("domain:corp.com", "a@evil.com@corp.com", true, false),
            ("domain:corp.com", "x@corp.com.evil.com", true, false),
            ("domain:corp.com", "x@evilcorp.com", true, false),
            ("domain:corp.com", "x@sub.corp.com", true, false),
            ("group:eng", "x@corp.com", false, true),
            ("group:ops", "x@corp.com", true, false),
            ("allAuthenticatedUsers", "x@corp.com", false, true),
            ("allUsers", "x@corp.com", false, true),
            ("serviceAccount:ci/bot", "x@corp.com", true, false),
        ];
        for (text, email, verified, want) in cases {
            assert_eq!(
                alice(email, *verified).matches(&member(text)),
                *want,
                "{text} vs {email} verified={verified}"
            );
        }
    }
}
