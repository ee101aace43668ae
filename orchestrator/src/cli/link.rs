//! `link set|down|up`: change one link of a running lab and print what it is now.

use anyhow::anyhow;
use lightcone::lab::{LinkChange, LinkRuntime};
use lightcone::parse::units;
use lightcone_link::model::{LinkModel, LossModel};

use super::{client_failure, invalid, pick_lab, supervisor_of, Failure};
use crate::{LinkCmd, LinkEnds, LinkParams};

impl From<LinkParams> for LinkChange {
    fn from(p: LinkParams) -> LinkChange {
        LinkChange {
            delay: p.delay,
            jitter: p.jitter,
            loss: p.loss,
            rate: p.rate,
            duplicate: p.duplicate,
            corrupt: p.corrupt,
            reorder: p.reorder,
        }
    }
}

/// What `link` asks of the supervisor.
enum Op {
    Set(LinkChange),
    State { up: bool },
}

/// `lightcone link …`: the link as the supervisor has it after the change.
pub(crate) fn cmd_link(action: LinkCmd) -> Result<(), Failure> {
    let (ends, change) = match action {
        LinkCmd::Set { ends, params } => {
            let change = LinkChange::from(params);
            // Check units here so a typo never reaches the lab.
            change
                .apply_to(&mut Default::default())
                .map_err(|e| invalid(anyhow!(e)))?;
            (ends, Op::Set(change))
        }
        LinkCmd::Down(ends) => (ends, Op::State { up: false }),
        LinkCmd::Up(ends) => (ends, Op::State { up: true }),
    };
    let LinkEnds { a, b, lab } = ends;
    let client = supervisor_of(&pick_lab(lab)?)?;
    let rt = match &change {
        Op::Set(c) => client.link_set(&a, &b, c),
        Op::State { up } => client.link_state(&a, &b, *up),
    }
    .map_err(client_failure)?;
    println!("{a}--{b}: {}", summarize_link(&rt));
    Ok(())
}

/// `up, delay 20ms jitter 0s loss 1% rate unlimited` (the a→b direction).
fn summarize_link(rt: &LinkRuntime) -> String {
    let m: &LinkModel = &rt.a_to_b;
    format!(
        "{} delay {} jitter {} loss {} rate {}",
        if rt.up { "up," } else { "DOWN," },
        units::fmt_ns(m.delay_ns),
        units::fmt_ns(m.jitter_ns),
        fmt_loss(&m.loss),
        m.rate_bps
            .map(units::fmt_bps)
            .unwrap_or_else(|| "unlimited".into())
    )
}

/// A link's loss model as the topology writes it: `0%`, `5%`, `5% (25% correlated)`,
/// `gilbert_elliott p 1% r 25% …`.
fn fmt_loss(l: &LossModel) -> String {
    let pct = |x: f64| format!("{}%", (x * 1e4).round() / 1e2);
    match *l {
        LossModel::Random {
            probability,
            correlation,
        } if correlation > 0.0 => {
            format!("{} ({} correlated)", pct(probability), pct(correlation))
        }
        LossModel::Random { probability, .. } => pct(probability),
        LossModel::GilbertElliott {
            p,
            r,
            loss_bad,
            loss_good,
        } => format!(
            "gilbert_elliott p {} r {} loss_bad {} loss_good {}",
            pct(p),
            pct(r),
            pct(loss_bad),
            pct(loss_good)
        ),
        LossModel::None => "0%".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_reads_as_the_topology_writes_it() {
        assert_eq!(fmt_loss(&LossModel::None), "0%");
        let random = |probability, correlation| LossModel::Random {
            probability,
            correlation,
        };
        assert_eq!(fmt_loss(&random(0.05, 0.0)), "5%");
        assert_eq!(fmt_loss(&random(0.05, 0.25)), "5% (25% correlated)");
        let ge = LossModel::GilbertElliott {
            p: 0.01,
            r: 0.25,
            loss_bad: 1.0,
            loss_good: 0.0,
        };
        assert_eq!(
            fmt_loss(&ge),
            "gilbert_elliott p 1% r 25% loss_bad 100% loss_good 0%"
        );
    }
}
