//! TCP forwarding grants: who may open a tunnel through a policy, and to which backend ports.

use std::collections::BTreeMap;

use super::{Identity, Member, Upstream};
use crate::error_codes::ErrorCode;

/// `spec.tcpForwarding` of a policy with its ports resolved to ready endpoints.
#[derive(Debug, Default)]
pub struct TunnelGrant {
    pub members: Vec<Member>,
    /// Service port → its ready endpoints, or why there are none.
    pub ports: BTreeMap<u16, Result<Vec<Upstream>, String>>,
}

/// Why a tunnel is refused, as the close code the client prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelRefusal {
    pub code: ErrorCode,
    pub reason: String,
}

impl TunnelGrant {
    /// Where a tunnel for `identity` to `port` may go, or the close code that refuses it.
    pub fn decide(&self, identity: &Identity, port: u16) -> Result<&[Upstream], TunnelRefusal> {
        let refuse = |code, reason: String| Err(TunnelRefusal { code, reason });
        if !self.members.iter().any(|member| identity.matches(member)) {
            return refuse(
                ErrorCode::TunnelNotAuthorized,
                "not a member of spec.tcpForwarding.members".into(),
            );
        }
        match self.ports.get(&port) {
            None => refuse(
                ErrorCode::TunnelNotAuthorized,
                format!("port {port} is not in spec.tcpForwarding.ports"),
            ),
            Some(Err(reason)) => refuse(ErrorCode::TunnelTargetNotFound, reason.clone()),
            Some(Ok(upstreams)) if upstreams.is_empty() => refuse(
                ErrorCode::TunnelTargetNotFound,
                format!("port {port} has no ready endpoint"),
            ),
            Some(Ok(upstreams)) => Ok(upstreams),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(email: &str) -> Identity {
        Identity {
            subject: email.into(),
            email: Some(email.into()),
            email_verified: true,
            issuer: "i".into(),
            groups: vec![],
            service_account: None,
        }
    }

    #[test]
    fn members_ports_and_endpoints_each_have_their_close_code() {
        let upstream = Upstream {
            authority: "127.0.0.1:22".parse().unwrap(),
        };
        let grant = TunnelGrant {
            members: vec!["user:ops@corp.com".parse().unwrap()],
            ports: BTreeMap::from([
                (22, Ok(vec![upstream])),
                (5432, Ok(vec![])),
                (6379, Err("Service ns/db has no port 6379".into())),
            ]),
        };
        let ops = who("ops@corp.com");
        assert!(grant.decide(&ops, 22).is_ok());
        let code =
            |identity: &Identity, port| grant.decide(identity, port).unwrap_err().code.number();
        assert_eq!(code(&who("dev@corp.com"), 22), 4033);
        assert_eq!(code(&ops, 80), 4033);
        assert_eq!(code(&ops, 5432), 4047);
        assert_eq!(code(&ops, 6379), 4047);
    }
}
