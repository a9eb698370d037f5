//! `kube-iap explain`: why a request would be allowed or denied, rule by rule, from a folder of
//! manifests. It builds the same table and calls the same evaluation as the proxy.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::index::Index;
use crate::model::{Decision, Identity, RequestFacts, RouteAction, RuleOutcome, path};
use crate::source::files;

/// A request to explain.
pub struct Question {
    pub manifests: PathBuf,
    pub url: String,
    /// The signed-in user's email; `None` for a request without credentials.
    pub user: Option<String>,
    pub groups: Vec<String>,
    /// `namespace/name` of a workload's service account.
    pub service_account: Option<String>,
    pub method: String,
    pub from: IpAddr,
    /// Seconds since the Unix epoch.
    pub at: i64,
}

/// The answer: a report for people, and whether the request would reach the backend.
pub struct Answer {
    pub report: String,
    pub allowed: bool,
}

pub fn explain(question: &Question) -> anyhow::Result<Answer> {
    let files = files::read_dir(&question.manifests).map_err(|error| {
        anyhow::anyhow!("cannot read {}: {error}", question.manifests.display())
    })?;
    let manifests = files::parse(&files);
    let mut index = Index::default();
    for resource in manifests.resources {
        index.apply(resource);
    }
    let table = index.build().table;

    let url = url::Url::parse(&question.url)
        .map_err(|error| anyhow::anyhow!("{}: not a URL: {error}", question.url))?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("{}: the URL names no host", question.url))?;
    let normalized = path::normalize(url.path())
        .map_err(|error| anyhow::anyhow!("the path is refused with 400: {error}"))?;
    let identity = question.user.as_ref().map(|email| Identity {
        subject: email.clone(),
        email: Some(email.clone()),
        email_verified: true,
        issuer: "kube-iap explain".into(),
        groups: question.groups.clone(),
        service_account: None,
    });
    let identity = match (&question.service_account, identity) {
        (Some(account), None) => Some(Identity {
            subject: format!("system:serviceaccount:{}", account.replace('/', ":")),
            email: None,
            email_verified: false,
            issuer: "kube-iap explain".into(),
            groups: question.groups.clone(),
            service_account: Some(account.clone()),
        }),
        (_, identity) => identity,
    };

    let mut report = String::new();
    let who = match (&identity, &question.service_account) {
        (None, _) => "nobody (no credentials)".to_string(),
        (Some(_), Some(account)) => format!("serviceAccount:{account}"),
        (Some(identity), None) => format!(
            "{} (verified email), groups [{}]",
            identity.email.as_deref().unwrap_or("-"),
            identity.groups.join(", ")
        ),
    };
    let _ = writeln!(
        report,
        "request:  {} {}{} from {}\nidentity: {who}",
        question.method, host, normalized, question.from
    );
    let Some(route) = table.route(host, &normalized) else {
        let _ = writeln!(
            report,
            "route:    none: 404, no IapPolicy serves {host}{normalized}"
        );
        return Ok(Answer {
            report,
            allowed: false,
        });
    };
    let _ = writeln!(
        report,
        "route:    {}{} -> IapPolicy {}",
        route.host, route.prefix, route.policy
    );
    if let RouteAction::Redirect(redirect) = &route.action {
        let _ = writeln!(
            report,
            "decision: REDIRECT ({}), before any sign-in",
            redirect.status
        );
        return Ok(Answer {
            report,
            allowed: true,
        });
    }
    if let RouteAction::Unprotected { reason } = &route.action {
        let _ = writeln!(report, "decision: DENY (403): {reason}");
        return Ok(Answer {
            report,
            allowed: false,
        });
    }
    if let RouteAction::FailClosed { code, reason } = &route.action {
        let code = code.map_or(String::new(), |code| {
            format!(" (error code {})", code.number())
        });
        let _ = writeln!(
            report,
            "decision: DENY{code}: the policy is invalid and fails closed: {reason}"
        );
        return Ok(Answer {
            report,
            allowed: false,
        });
    }
    if route.access.is_public(&normalized) {
        let _ = writeln!(
            report,
            "decision: ALLOW: a public path, forwarded without identity"
        );
        return Ok(Answer {
            report,
            allowed: true,
        });
    }
    let facts = RequestFacts {
        path: &normalized,
        method: &question.method,
        client: question.from,
        now: question.at,
    };
    let _ = writeln!(report, "rules:");
    for outcome in route.access.trace(identity.as_ref(), &facts) {
        let _ = writeln!(report, "  {}", RuleOutcome::describe(&outcome));
    }
    let allowed = match route.access.evaluate(identity.as_ref(), &facts) {
        Decision::Allow(outcome) => {
            let _ = writeln!(
                report,
                "decision: ALLOW by {}[{}]",
                outcome.list.field(),
                outcome.index
            );
            true
        }
        Decision::Deny(_) if identity.is_none() => {
            let _ = writeln!(
                report,
                "decision: SIGN-IN REQUIRED: browsers are sent to the identity provider (302), \
                 scripts and writes get 401"
            );
            false
        }
        Decision::Deny(denial) => {
            let _ = writeln!(report, "decision: DENY (403): {}", denial.reason());
            false
        }
    };
    Ok(Answer { report, allowed })
}
