//! The handshake rule: whether a peer's Hello (on accept) or HelloAck (on
//! dial) is believed. Both sides of every connection call [`check_peer`]
//! with what the cluster CA certified for the peer and the table of
//! generations seen; the transport only feeds it and acts on the answer.
//!
//! A peer is believed when, in this order:
//! 1. the protocol agrees ([`negotiate`]: cluster name, versions, not two
//!    clients);
//! 2. the node id it claims is the one its certificate was issued for;
//! 3. the role it claims is one its certificate grants (a member
//!    certificate grants both roles, a client certificate only
//!    [`Role::Client`], a certificate without a role none);
//! 4. its generation is not older than the highest one seen for that node
//!    id (a newer one replaces it).

use std::collections::HashMap;

use hydracache_protocol::{negotiate, Agreement, ErrorCode, Hello, Role};

/// What the cluster CA vouches for about a peer: read from its verified
/// leaf certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Certified {
    /// The node id (the subject common name), if the certificate has one.
    pub(crate) node_id: Option<String>,
    /// The role the certificate grants, if it names one.
    pub(crate) role: Option<Role>,
}

impl Certified {
    /// True if this certificate lets its holder say it is a `claimed`.
    pub(crate) fn grants(&self, claimed: Role) -> bool {
        matches!(
            (self.role, claimed),
            (Some(Role::Member), _) | (Some(Role::Client), Role::Client)
        )
    }
}

/// Why a peer was not believed: the code and reason sent in `GoAway` (on
/// accept) or returned to the caller (on dial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The protocol's error code.
    pub(crate) code: ErrorCode,
    /// What was wrong, for the peer's operator.
    pub(crate) reason: String,
}

/// The highest generation seen per node id: an older generation of a node
/// that restarted is refused in both directions.
#[derive(Debug, Default)]
pub(crate) struct Generations {
    highest: HashMap<String, u64>,
}

impl Generations {
    /// How many node ids the table holds.
    pub(crate) fn len(&self) -> usize {
        self.highest.len()
    }

    /// Forgets every node id `keep` answers false for (the transport keeps
    /// the ids it has an open connection with), so that the table does not
    /// grow with churn.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.highest.retain(|id, _| keep(id));
    }
}

/// Checks a peer's `theirs` (its Hello, or its HelloAck) against our
/// `ours`, its certificate and the generations seen; on success records its
/// generation and returns what was agreed.
pub(crate) fn check_peer(
    ours: &Hello,
    theirs: &Hello,
    certificate: &Certified,
    generations: &mut Generations,
) -> Result<Agreement, Refusal> {
    let agreed = negotiate(ours, theirs).map_err(|e| Refusal {
        code: e.code(),
        reason: e.to_string(),
    })?;
    let claimed = agreed.peer.id.as_str();
    if certificate.node_id.as_deref() != Some(claimed) {
        return Err(Refusal {
            code: ErrorCode::REFUSED,
            reason: format!(
                "the certificate is for {:?}, the peer claims {claimed:?}",
                certificate.node_id.as_deref().unwrap_or_default()
            ),
        });
    }
    if !certificate.grants(agreed.peer_role) {
        return Err(Refusal {
            code: ErrorCode::REFUSED,
            reason: format!(
                "the certificate of {claimed:?} grants {}, the peer claims {:?}",
                match certificate.role {
                    Some(Role::Client) => "the client role",
                    Some(Role::Member) => "both roles",
                    None => "no role",
                },
                agreed.peer_role
            ),
        });
    }
    let generation = agreed.peer.generation;
    let known = generations.highest.get(claimed).copied();
    if let Some(known) = known.filter(|&k| generation < k) {
        return Err(Refusal {
            code: ErrorCode::STALE_GENERATION,
            reason: format!(
                "node {claimed} generation {generation} is older than generation {known}"
            ),
        });
    }
    generations.highest.insert(claimed.to_string(), generation);
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str, generation: u64, role: Role) -> Hello {
        Hello::new("orders", (id, generation), role)
    }

    fn cert(id: &str, role: Option<Role>) -> Certified {
        Certified {
            node_id: Some(id.to_string()),
            role,
        }
    }

    const ME: fn() -> Hello = || hello("me", 1, Role::Member);

    #[test]
    fn a_peer_that_claims_its_certified_id_and_role_is_believed() {
        let mut gens = Generations::default();
        let agreed = check_peer(
            &ME(),
            &hello("n2", 3, Role::Member),
            &cert("n2", Some(Role::Member)),
            &mut gens,
        )
        .unwrap();
        assert_eq!((agreed.peer.id.as_str(), agreed.peer.generation), ("n2", 3));
        assert_eq!(gens.highest.len(), 1);
    }

    #[test]
    fn a_peer_that_claims_another_node_id_is_refused() {
        let mut gens = Generations::default();
        let refusal = check_peer(
            &ME(),
            &hello("n2", 3, Role::Member),
            &cert("evil", Some(Role::Member)),
            &mut gens,
        )
        .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::REFUSED);
        assert!(refusal.reason.contains("evil"), "{}", refusal.reason);
        assert!(gens.highest.is_empty(), "a refused peer leaves no trace");
        let no_cn = Certified {
            node_id: None,
            role: Some(Role::Member),
        };
        assert!(check_peer(&ME(), &hello("n2", 3, Role::Member), &no_cn, &mut gens).is_err());
    }

    #[test]
    fn a_client_certificate_cannot_claim_the_member_role() {
        let mut gens = Generations::default();
        let client_cert = cert("c1", Some(Role::Client));
        let refusal = check_peer(
            &ME(),
            &hello("c1", 1, Role::Member),
            &client_cert,
            &mut gens,
        )
        .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::REFUSED);
        assert!(refusal.reason.contains("client role"), "{}", refusal.reason);
        assert!(check_peer(
            &ME(),
            &hello("c1", 1, Role::Client),
            &client_cert,
            &mut gens
        )
        .is_ok());
    }

    #[test]
    fn a_member_certificate_may_also_act_as_a_client() {
        let mut gens = Generations::default();
        let member_cert = cert("m1", Some(Role::Member));
        assert!(check_peer(
            &ME(),
            &hello("m1", 1, Role::Client),
            &member_cert,
            &mut gens
        )
        .is_ok());
    }

    #[test]
    fn a_certificate_without_a_role_grants_none() {
        let mut gens = Generations::default();
        for role in [Role::Member, Role::Client] {
            let refusal =
                check_peer(&ME(), &hello("x", 1, role), &cert("x", None), &mut gens).unwrap_err();
            assert!(refusal.reason.contains("no role"), "{}", refusal.reason);
        }
    }

    #[test]
    fn an_older_generation_is_refused_and_a_newer_one_replaces_it() {
        let mut gens = Generations::default();
        let c = cert("n2", Some(Role::Member));
        check_peer(&ME(), &hello("n2", 5, Role::Member), &c, &mut gens).unwrap();
        let refusal = check_peer(&ME(), &hello("n2", 4, Role::Member), &c, &mut gens).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::STALE_GENERATION);
        check_peer(&ME(), &hello("n2", 5, Role::Member), &c, &mut gens).unwrap();
        check_peer(&ME(), &hello("n2", 6, Role::Member), &c, &mut gens).unwrap();
        assert!(check_peer(&ME(), &hello("n2", 5, Role::Member), &c, &mut gens).is_err());
    }

    #[test]
    fn forgotten_ids_start_afresh() {
        let mut gens = Generations::default();
        for id in ["a", "b", "c"] {
            let c = cert(id, Some(Role::Member));
            check_peer(&ME(), &hello(id, 5, Role::Member), &c, &mut gens).unwrap();
        }
        gens.retain(|id| id == "b");
        assert_eq!(gens.len(), 1);
        let a = cert("a", Some(Role::Member));
        assert!(check_peer(&ME(), &hello("a", 1, Role::Member), &a, &mut gens).is_ok());
        let b = cert("b", Some(Role::Member));
        assert!(check_peer(&ME(), &hello("b", 1, Role::Member), &b, &mut gens).is_err());
    }

    #[test]
    fn protocol_disagreements_keep_their_codes() {
        let mut gens = Generations::default();
        let other_cluster = Hello::new("billing", ("n2", 1), Role::Member);
        let refusal = check_peer(
            &ME(),
            &other_cluster,
            &cert("n2", Some(Role::Member)),
            &mut gens,
        )
        .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::CLUSTER_MISMATCH);
    }
}
