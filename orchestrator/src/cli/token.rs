//! `token mint | attenuate | revoke`: capability tokens of a running lab (issue 17, item 3;
//! see [`lightcone_agent::caps`]). `mint` reads the lab's operator root key (root only,
//! 0600 in the lab's state dir) and prints a token; `attenuate` narrows a token offline
//! with the public key only; `revoke` asks the supervisor to push the token's revocation
//! id to every agent.

use std::time::SystemTime;

use anyhow::anyhow;
use lightcone_agent::caps::{self, Caveats, Op};

use super::{client_failure, invalid, pick_lab, supervisor_of, Failure};

/// Longest lifetime `token mint` gives: a day. A longer-lived bearer token is a standing
/// risk; mint a new one instead.
pub(crate) const MAX_TTL_S: u64 = 86_400;

/// The caveats of `--op/--scope/--node/--ttl`, the node named or numbered in the lab's plan.
fn caveats(
    dir: &lightcone::state::LabDir,
    op: Option<&str>,
    scope: Option<String>,
    node: Option<String>,
    ttl: Option<&str>,
) -> Result<Caveats, Failure> {
    let op = op
        .map(|o| o.parse::<Op>().map_err(|e| invalid(anyhow!("--op: {e}"))))
        .transpose()?;
    let expires = match ttl {
        None => None,
        Some(t) => {
            let ns = lightcone::parse::units::duration_ns(t)
                .map_err(|e| invalid(anyhow!("--ttl: {e}")))?;
            let s = ns.div_ceil(1_000_000_000);
            if s == 0 || s > MAX_TTL_S {
                return Err(invalid(anyhow!(
                    "--ttl must be 1 s to {MAX_TTL_S} s (a day), got {t}"
                )));
            }
            Some(SystemTime::now() + std::time::Duration::from_secs(s))
        }
    };
    let node = match node {
        None => None,
        Some(n) => {
            // The plan the supervisor wrote at `up` (JSON): node names in id order.
            let plan: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.plan_path())
                    .map_err(|e| anyhow!("read {}: {e}", dir.plan_path().display()))?,
            )
            .map_err(|e| anyhow!("parse {}: {e}", dir.plan_path().display()))?;
            let names: Vec<&str> = plan["nodes"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n["name"].as_str()).collect())
                .unwrap_or_default();
            let id = names
                .iter()
                .position(|m| *m == n)
                .or_else(|| n.parse::<usize>().ok().filter(|i| *i < names.len()))
                .ok_or_else(|| invalid(anyhow!("--node: lab {} has no node {n}", dir.lab)))?;
            Some(id as u32)
        }
    };
    Ok(Caveats {
        op,
        scope,
        node,
        expires,
    })
}

/// `lightcone token mint --op OP [--scope PREFIX] [--node N] --ttl D [--lab L]`.
pub(crate) fn cmd_token_mint(
    lab: Option<String>,
    op: String,
    scope: Option<String>,
    node: Option<String>,
    ttl: String,
) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    let c = caveats(&dir, Some(&op), scope, node, Some(&ttl))?;
    let key = lightcone::keys::operator_key(&dir)?;
    println!("{}", key.mint(&c)?);
    Ok(())
}

/// `lightcone token attenuate TOKEN [--op] [--scope] [--node] [--ttl] [--lab L]`: the token
/// with one more block of checks (it can only narrow).
pub(crate) fn cmd_token_attenuate(
    lab: Option<String>,
    token: String,
    op: Option<String>,
    scope: Option<String>,
    node: Option<String>,
    ttl: Option<String>,
) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    let c = caveats(&dir, op.as_deref(), scope, node, ttl.as_deref())?;
    if c == Caveats::default() {
        return Err(invalid(anyhow!(
            "attenuate needs at least one of --op, --scope, --node, --ttl"
        )));
    }
    let public = lightcone::keys::operator_key(&dir)?.public_hex();
    let t = caps::attenuate(&token, &public, &c).map_err(invalid)?;
    println!("{t}");
    Ok(())
}

/// `lightcone token revoke TOKEN [--lab L]`: prints the supervisor's answer.
pub(crate) fn cmd_token_revoke(lab: Option<String>, token: String) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    let client = supervisor_of(&dir)?;
    let r = client.revoke(&token).map_err(client_failure)?;
    println!("{r}");
    Ok(())
}
