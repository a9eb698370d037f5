//! Policy evaluation: one pure function decides every request, and can explain its decision
//! rule by rule (the 403 page and `kube-iap explain` both read it).
//!
//! A request is denied when some `deny` rule matches it (members and conditions), else allowed
//! when some `access` rule matches it, else denied. A rule's members match an identity as
//! [`Identity::matches`] says; a request without identity matches only `allUsers`.

use std::net::IpAddr;

use super::{AccessPolicy, Identity, Member};

/// Conditions of a rule; every condition given must hold. Empty lists mean "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Normalised path prefixes.
    pub paths: Vec<String>,
    /// Upper-case methods.
    pub methods: Vec<String>,
    pub source_cidrs: Vec<ipnet::IpNet>,
    /// Seconds since the Unix epoch.
    pub after: Option<i64>,
    pub before: Option<i64>,
}

/// One rule: who, and under which conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub members: Vec<Member>,
    pub when: Conditions,
}

/// What the decision looks at besides the identity.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The normalised path.
    pub path: &'a str,
    pub method: &'a str,
    /// The client's address (see `proxy::headers::client_address`).
    pub client: IpAddr,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// Which list a rule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleList {
    Access,
    Deny,
}

impl RuleList {
    pub fn field(self) -> &'static str {
        match self {
            RuleList::Access => "spec.access",
            RuleList::Deny => "spec.deny",
        }
    }
}

/// A condition that did not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Paths,
    Methods,
    SourceCidrs,
    After,
    Before,
}

impl Condition {
    pub fn field(self) -> &'static str {
        match self {
            Condition::Paths => "when.paths",
            Condition::Methods => "when.methods",
            Condition::SourceCidrs => "when.sourceCidrs",
            Condition::After => "when.after",
            Condition::Before => "when.before",
        }
    }
}

/// How one rule fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOutcome {
    pub list: RuleList,
    pub index: usize,
    /// The first member that matched, if any.
    pub member: Option<Member>,
    /// The first condition that failed (only looked at when a member matched).
    pub failed: Option<Condition>,
}

impl RuleOutcome {
    pub fn applies(&self) -> bool {
        self.member.is_some() && self.failed.is_none()
    }

    /// `spec.access[1]` and what happened, for people.
    pub fn describe(&self) -> String {
        let rule = format!("{}[{}]", self.list.field(), self.index);
        match (&self.member, self.failed) {
            (None, _) => format!("{rule}: no member matches"),
            (Some(member), Some(condition)) => format!(
                "{rule}: {member} matches, but {} does not hold",
                condition.field()
            ),
            (Some(member), None) => format!("{rule}: {member} matches and every condition holds"),
        }
    }
}

/// The decision and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(RuleOutcome),
    Deny(Denial),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A deny rule applies.
    DenyRule(RuleOutcome),
    /// An access rule's member matched, but one of its conditions failed.
    ConditionFailed(RuleOutcome),
    /// No access rule names this identity.
    NoRuleMatched,
}

impl Denial {
    /// Why, in words a user can act on; names rules, never other users.
    pub fn reason(&self) -> String {
        match self {
            Denial::DenyRule(outcome) => format!(
                "A deny rule applies to you ({}[{}], as {}).",
                outcome.list.field(),
                outcome.index,
                outcome
                    .member
                    .as_ref()
                    .map_or(String::new(), Member::to_string)
            ),
            Denial::ConditionFailed(outcome) => format!(
                "{}[{}] names you, but its condition {} does not hold for this request.",
                outcome.list.field(),
                outcome.index,
                outcome.failed.map_or("", Condition::field)
            ),
            Denial::NoRuleMatched => "No access rule of the policy names you.".to_string(),
        }
    }
}

impl AccessPolicy {
    /// Decides a request. `identity` is `None` for a request without credentials.
    pub fn evaluate(&self, identity: Option<&Identity>, facts: &RequestFacts<'_>) -> Decision {
        if let Some(hit) = self
            .outcomes(RuleList::Deny, identity, facts)
            .find(RuleOutcome::applies)
        {
            return Decision::Deny(Denial::DenyRule(hit));
        }
        let mut near_miss = None;
        for outcome in self.outcomes(RuleList::Access, identity, facts) {
            if outcome.applies() {
                return Decision::Allow(outcome);
            }
            if outcome.member.is_some() && near_miss.is_none() {
                near_miss = Some(outcome);
            }
        }
        Decision::Deny(near_miss.map_or(Denial::NoRuleMatched, Denial::ConditionFailed))
    }

    /// Every rule's outcome, deny rules first: what `kube-iap explain` prints.
    pub fn trace(&self, identity: Option<&Identity>, facts: &RequestFacts<'_>) -> Vec<RuleOutcome> {
        self.outcomes(RuleList::Deny, identity, facts)
            .chain(self.outcomes(RuleList::Access, identity, facts))
            .collect()
    }

    fn outcomes<'a>(
        &'a self,
        list: RuleList,
        identity: Option<&'a Identity>,
        facts: &'a RequestFacts<'_>,
    ) -> impl Iterator<Item = RuleOutcome> + 'a {
        let rules = match list {
            RuleList::Access => &self.rules,
            RuleList::Deny => &self.deny,
        };
        rules.iter().enumerate().map(move |(index, rule)| {
            let member = rule
                .members
                .iter()
                .find(|member| match identity {
                    Some(identity) => identity.matches(member),
                    None => **member == Member::AllUsers,
                })
                .cloned();
            let failed = member.as_ref().and_then(|_| rule.when.first_failed(facts));
            RuleOutcome {
                list,
                index,
                member,
                failed,
            }
        })
    }
}

impl Conditions {
    fn first_failed(&self, facts: &RequestFacts<'_>) -> Option<Condition> {
        if !self.paths.is_empty()
            && !self
                .paths
                .iter()
                .any(|prefix| super::path::has_prefix(facts.path, prefix))
        {
            return Some(Condition::Paths);
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == facts.method) {
            return Some(Condition::Methods);
        }
        if !self.source_cidrs.is_empty()
            && !self
                .source_cidrs
                .iter()
                .any(|net| net.contains(&facts.client))
        {
            return Some(Condition::SourceCidrs);
        }
        if self.after.is_some_and(|after| facts.now < after) {
            return Some(Condition::After);
        }
        if self.before.is_some_and(|before| facts.now >= before) {
            return Some(Condition::Before);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn who(email: &str, groups: &[&str]) -> Identity {
        Identity {
            subject: format!("sub-{email}"),
            email: Some(email.into()),
            email_verified: true,
            issuer: "https://idp".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            service_account: None,
        }
    }

    fn rule(members: &[&str], when: Conditions) -> AccessRule {
        AccessRule {
            members: members.iter().map(|m| m.parse().unwrap()).collect(),
            when,
        }
    }

    fn facts<'a>(path: &'a str, method: &'a str, client: &str) -> RequestFacts<'a> {
        RequestFacts {
            path,
            method,
            client: client.parse().unwrap(),
            now: NOW,
        }
    }

    /// The policy of the table below: engineers everywhere; contractors only on /docs, read-only,
    /// from the office, within a time window; nobody from the quarantine group.
    fn policy() -> AccessPolicy {
        AccessPolicy {
            rules: vec![
                rule(&["group:eng", "user:boss@corp.com"], Conditions::default()),
                rule(
                    &["domain:contractor.com"],
                    Conditions {
                        paths: vec!["/docs".into()],
                        methods: vec!["GET".into(), "HEAD".into()],
                        source_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                        after: Some(NOW - 60),
                        before: Some(NOW + 60),
                    },
                ),
                rule(
                    &["allUsers"],
                    Conditions {
                        paths: vec!["/public".into()],
                        ..Conditions::default()
                    },
                ),
            ],
            deny: vec![rule(&["group:quarantine"], Conditions::default())],
            ..AccessPolicy::default()
        }
    }

    #[test]
    fn without_the_allusers_rule_a_stranger_matches_no_rule() {
        let mut policy = policy();
        policy.rules.pop();
        let stranger = who("x@other.com", &[]);
        assert_eq!(
            policy.evaluate(Some(&stranger), &facts("/", "GET", "10.1.2.3")),
            Decision::Deny(Denial::NoRuleMatched)
        );
        assert_eq!(
            policy.evaluate(None, &facts("/", "GET", "10.1.2.3")),
            Decision::Deny(Denial::NoRuleMatched)
        );
    }

    #[test]
    fn every_member_kind_and_condition_decides_as_documented() {
        let policy = policy();
        let eng = who("e@corp.com", &["eng"]);
        let contractor = who("c@contractor.com", &[]);
        let quarantined = who("q@corp.com", &["eng", "quarantine"]);
        let boss = who("BOSS@corp.com", &[]);
        let stranger = who("x@other.com", &[]);
        type Row<'a> = (
            Option<&'a Identity>,
            &'a str,
            &'a str,
            &'a str,
            Result<usize, Denial>,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            (Some(&eng), "/anything", "POST", "192.0.2.1", Ok(0)),
            (Some(&boss), "/", "GET", "192.0.2.1", Ok(0)),
            (Some(&contractor), "/docs/a", "GET", "10.1.2.3", Ok(1)),
            (Some(&contractor), "/docs/a", "POST", "10.1.2.3", Err(failed(1, Condition::Methods))),
            (Some(&contractor), "/admin", "GET", "10.1.2.3", Err(failed(1, Condition::Paths))),
            (Some(&contractor), "/docs", "GET", "192.0.2.1", Err(failed(1, Condition::SourceCidrs))),
            (Some(&contractor), "/public/x", "GET", "192.0.2.1", Ok(2)),
            (Some(&quarantined), "/public/x", "GET", "10.1.2.3", Err(Denial::DenyRule(deny_hit()))),
            (None, "/public/x", "GET", "192.0.2.1", Ok(2)),
            // allUsers names everyone, so its path condition is what failed.
            (None, "/", "GET", "192.0.2.1", Err(public_only())),
            (Some(&stranger), "/", "GET", "10.1.2.3", Err(public_only())),
        ];
        for (identity, path, method, client, want) in rows {
            let got = match policy.evaluate(identity, &facts(path, method, client)) {
                Decision::Allow(outcome) => Ok(outcome.index),
                Decision::Deny(denial) => Err(denial),
            };
            assert_eq!(got, want, "{identity:?} {method} {path} from {client}");
        }
    }

    fn failed(index: usize, condition: Condition) -> Denial {
        Denial::ConditionFailed(RuleOutcome {
            list: RuleList::Access,
            index,
            member: Some("domain:contractor.com".parse().unwrap()),
            failed: Some(condition),
        })
    }

    fn public_only() -> Denial {
        Denial::ConditionFailed(RuleOutcome {
            list: RuleList::Access,
            index: 2,
            member: Some(Member::AllUsers),
            failed: Some(Condition::Paths),
        })
    }

    fn deny_hit() -> RuleOutcome {
        RuleOutcome {
            list: RuleList::Deny,
            index: 0,
            member: Some("group:quarantine".parse().unwrap()),
            failed: None,
        }
    }

    #[test]
    fn time_windows_open_at_after_and_close_at_before() {
        let window = AccessPolicy {
            rules: vec![rule(
                &["allAuthenticatedUsers"],
                Conditions {
                    after: Some(NOW),
                    before: Some(NOW + 10),
                    ..Conditions::default()
                },
            )],
            ..AccessPolicy::default()
        };
        let someone = who("a@b.com", &[]);
        for (now, open) in [
            (NOW - 1, false),
            (NOW, true),
            (NOW + 9, true),
            (NOW + 10, false),
        ] {
            let facts = RequestFacts {
                now,
                ..facts("/", "GET", "127.0.0.1")
            };
            assert_eq!(
                matches!(window.evaluate(Some(&someone), &facts), Decision::Allow(_)),
                open,
                "at {now}"
            );
        }
    }

    #[test]
    fn the_reason_names_the_rule_and_condition_but_no_one_else() {
        let denial = failed(1, Condition::SourceCidrs);
        assert_eq!(
            denial.reason(),
            "spec.access[1] names you, but its condition when.sourceCidrs does not hold for this request."
        );
        let trace = policy().trace(
            Some(&who("c@contractor.com", &[])),
            &facts("/docs", "GET", "192.0.2.1"),
        );
        let lines: Vec<String> = trace.iter().map(RuleOutcome::describe).collect();
        assert_eq!(
            lines,
            [
                "spec.deny[0]: no member matches",
                "spec.access[0]: no member matches",
                "spec.access[1]: domain:contractor.com matches, but when.sourceCidrs does not hold",
                "spec.access[2]: allUsers matches, but when.paths does not hold",
            ]
        );
    }
}
