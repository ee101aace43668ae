//! Byzantine behaviours a node can be told to play (a test fault), by name.

use serde::Serialize;

/// Byzantine behaviours a node can be told to play (the scenario verb `byzantine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Byzantine {
    /// Claim live cell members dead, first-hand, on every membership message.
    pub lie_membership: bool,
    /// Silently drop every frame it should forward (a black hole).
    pub drop_forwarding: bool,
    /// Accuse every other node of its cluster, every accusation interval (a member of a
    /// coalition of false accusers); with watch `bft_verdicts`, also vote against every
    /// other member of its BFT group in the group's log (signed votes, once per term).
    pub false_accuse: bool,
    /// Claim live cell members dead like `lie_membership`, but name another cell member as
    /// the accuser (a relay forging who accused).
    pub forge_accuser: bool,
    /// Show odd-numbered cell members another branch of our transparency log than the
    /// even-numbered ones (two signed heads of one size, different roots).
    pub split_log: bool,
    /// As a task owner, offer each new lease to two tiles at once (the same lease id; with
    /// trust option `bft_leases`, two grants to the cell's log, of which the log accepts
    /// one).
    pub double_lease: bool,
}

impl Byzantine {
    pub const BEHAVIOURS: [&'static str; 6] = [
        "lie_membership",
        "drop_forwarding",
        "false_accuse",
        "forge_accuser",
        "split_log",
        "double_lease",
    ];

    /// From behaviour names; an unknown name is an error that lists the known ones.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Byzantine, String> {
        let mut b = Byzantine::default();
        for n in names {
            match n.as_ref() {
                "lie_membership" => b.lie_membership = true,
                "drop_forwarding" => b.drop_forwarding = true,
                "false_accuse" => b.false_accuse = true,
                "forge_accuser" => b.forge_accuser = true,
                "split_log" => b.split_log = true,
                "double_lease" => b.double_lease = true,
                other => {
                    return Err(format!(
                        "unknown byzantine behaviour {other:?} (known: {})",
                        Byzantine::BEHAVIOURS.join(", ")
                    ))
                }
            }
        }
        Ok(b)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.lie_membership {
            v.push("lie_membership");
        }
        if self.drop_forwarding {
            v.push("drop_forwarding");
        }
        if self.false_accuse {
            v.push("false_accuse");
        }
        if self.forge_accuser {
            v.push("forge_accuser");
        }
        if self.split_log {
            v.push("split_log");
        }
        if self.double_lease {
            v.push("double_lease");
        }
        v
    }
}
