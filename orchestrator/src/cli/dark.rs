//! `dark SCOPE` / `undark SCOPE`: panic-to-dark (issue 18). Signs a runtime order with t of
//! the lab's authority shares ([`lightcone::authority`]) and hands it, through the
//! supervisor, to one running agent inside the scope; that agent floods it inside the
//! scope (see `lightcone_core::update::dark`).

use anyhow::anyhow;
use lightcone::api::{OrderReply, OrderRequest};
use lightcone::authority::{self, AuthorityError};
use lightcone_core::update::dark::{Order, DARK_GRACE};

use super::{api, invalid, lab_plan, pick_lab, state, supervisor_of, Failure};

/// The options both commands take.
#[derive(clap::Args)]
pub(crate) struct OrderArgs {
    /// A node name, a cell (`l0c0k1`: its tiles' name prefix) or a layer (`l0`).
    pub scope: String,
    #[arg(long)]
    pub lab: Option<String>,
    /// Sign with this many authority shares instead of the threshold (for testing: fewer
    /// than t are refused by the signing step).
    #[arg(long)]
    pub shares: Option<usize>,
    /// With fewer than t shares, deliver an order with a forged signature anyway (for
    /// testing: the agent refuses it and nothing changes).
    #[arg(long)]
    pub deliver_anyway: bool,
    /// Deliver the last dark (or undark) order signed again, unchanged, to an agent in
    /// SCOPE (for testing: agents refuse a replay and nothing changes).
    #[arg(long)]
    pub replay_last: bool,
}

fn authority_failure(e: AuthorityError) -> Failure {
    match e {
        AuthorityError::NoScope { .. } | AuthorityError::TooManyShares { .. } => invalid(e),
        e => Failure::from(e),
    }
}

/// `lightcone dark|undark SCOPE [--lab L] [--shares N] [--deliver-anyway] [--replay-last]`.
pub(crate) fn cmd_order(dark: bool, a: OrderArgs) -> Result<(), Failure> {
    let verb = if dark { "dark" } else { "undark" };
    let dir = pick_lab(a.lab)?;
    let plan = lab_plan(&dir)?;
    let scope = authority::resolve(&plan, &a.scope).map_err(authority_failure)?;
    let client = supervisor_of(&dir)?;
    let status = client
        .status(lightcone::client::DEFAULT_TIMEOUT)
        .map_err(super::client_failure)?;
    let via = scope
        .nodes
        .iter()
        .map(|i| &plan.nodes[*i].name)
        .find(|name| {
            status
                .nodes
                .iter()
                .any(|n| &n.name == *name && n.agent.state == "running")
        })
        .cloned()
        .ok_or_else(|| {
            state(format!(
                "no running agent in {} {}: nothing was sent",
                scope.kind, scope.name
            ))
        })?;
    let (bytes, how) = if a.replay_last {
        let b = authority::last_order(&dir, dark)
            .ok_or_else(|| invalid(anyhow!("lab {} signed no {verb} order yet", dir.lab)))?;
        let o = Order::decode(&b).map_err(|e| Failure::from(anyhow!("last order: {e}")))?;
        (b, format!("replaying order serial {}", o.serial))
    } else {
        let record = authority::record(&dir).map_err(authority_failure)?;
        let n = a.shares.unwrap_or(usize::from(record.t));
        let (group, shares) = authority::group_and_shares(&dir, n).map_err(authority_failure)?;
        let serial = authority::next_serial(&dir).map_err(authority_failure)?;
        let mut rng = rand::rngs::OsRng;
        let signed = authority::sign(&group, &shares, serial, scope.dest, dark, &mut rng);
        match signed.map_err(|e| match e {
            AuthorityError::Threshold(t) => t.to_string(),
            e => e.to_string(),
        }) {
            Ok(o) => {
                let b = o.encode();
                authority::remember_order(&dir, dark, &b).map_err(authority_failure)?;
                let how = format!(
                    "order serial {serial} signed by {n} of {} authority shares (threshold {})",
                    record.members.len(),
                    record.t
                );
                (b, how)
            }
            Err(e) if !a.deliver_anyway => {
                return Err(Failure::from(anyhow!(
                    "signing refused: {e}; nothing was sent"
                )))
            }
            Err(e) => {
                eprintln!("signing refused: {e}; delivering a forged signature (--deliver-anyway)");
                let o = authority::forge(serial, scope.dest, dark, &mut rng);
                (o.encode(), format!("forged order serial {serial}"))
            }
        }
    };
    let v = api(
        &client,
        "POST",
        &format!("/api/nodes/{via}/order"),
        Some(
            serde_json::to_value(OrderRequest {
                order_hex: hex::encode(&bytes),
            })
            .map_err(Failure::from)?,
        ),
    )?;
    let r: OrderReply = serde_json::from_value(v)
        .map_err(|e| Failure::from(anyhow::Error::new(e).context("read API answer")))?;
    println!(
        "{verb} {} {} ({} node{}): {how}, delivered to {}, which is {} now",
        scope.kind,
        scope.name,
        scope.nodes.len(),
        if scope.nodes.len() == 1 { "" } else { "s" },
        r.node,
        if r.node_dark { "dark" } else { "lit" },
    );
    if dark {
        println!(
            "  it floods the order inside the {}; each node sends no user traffic from then on and no frame at all {} s after",
            scope.kind,
            DARK_GRACE.as_secs_f64()
        );
    }
    Ok(())
}
