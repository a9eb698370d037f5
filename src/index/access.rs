//! An IapPolicy's rules, parsed into the routing model's policy: members, conditions (paths
//! normalised, methods upper-cased, CIDRs and times parsed), public paths. Anything invalid is
//! reported by field so the policy fails closed with a message that says where.

use crate::api::{AccessConditions, AccessRule as ApiRule, IapPolicySpec};
use crate::model::path;
use crate::model::{AccessPolicy, AccessRule, Conditions, Member};

pub fn parse_access(spec: &IapPolicySpec) -> Result<AccessPolicy, String> {
    let rules = parse_rules("spec.access", &spec.access)?;
    let deny = parse_rules("spec.deny", &spec.deny)?;
    let mut public_paths = Vec::with_capacity(spec.public_paths.len());
    for prefix in &spec.public_paths {
        public_paths.push(
            path::normalize(prefix)
                .map_err(|error| format!("spec.publicPaths {prefix:?}: {error}."))?,
        );
    }
    Ok(AccessPolicy {
        rules,
        deny,
        public_paths,
        allow_http_options: spec
            .cors
            .as_ref()
            .is_some_and(|cors| cors.allow_http_options),
    })
}

fn parse_rules(field: &str, rules: &[ApiRule]) -> Result<Vec<AccessRule>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let at = format!("{field}[{index}]");
            let members = rule
                .members
                .iter()
                .map(|member| member.parse::<Member>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| format!("{at}: {error}."))?;
            let when = match &rule.when {
                Some(when) => parse_conditions(&at, when)?,
                None => Conditions::default(),
            };
            Ok(AccessRule { members, when })
        })
        .collect()
}

fn parse_conditions(at: &str, when: &AccessConditions) -> Result<Conditions, String> {
    let paths = when
        .paths
        .iter()
        .map(|prefix| {
            path::normalize(prefix).map_err(|error| format!("{at}.when.paths {prefix:?}: {error}."))
        })
        .collect::<Result<_, _>>()?;
    let source_cidrs = when
        .source_cidrs
        .iter()
        .map(|cidr| {
            cidr.trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| {
                    cidr.trim()
                        .parse::<std::net::IpAddr>()
                        .map(ipnet::IpNet::from)
                })
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!("{at}.when.sourceCidrs {cidr:?} is not a CIDR such as 10.0.0.0/8.")
                })
        })
        .collect::<Result<_, _>>()?;
    let time = |name: &str, value: &Option<String>| -> Result<Option<i64>, String> {
        value
            .as_deref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.timestamp())
                    .map_err(|_| format!("{at}.when.{name} {text:?} is not an RFC 3339 time."))
            })
            .transpose()
    };
    let after = time("after", &when.after)?;
    let before = time("before", &when.before)?;
    if let (Some(after), Some(before)) = (after, before) {
        if after >= before {
            return Err(format!("{at}.when: after must be earlier than before."));
        }
    }
    Ok(Conditions {
        paths,
        methods: when
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        source_cidrs,
        after,
        before,
    })
}
