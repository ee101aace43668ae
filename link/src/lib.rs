//! One meaning of a link, for every engine that carries one: [`model::LinkModel`] (delay,
//! jitter and its distribution, random or Gilbert–Elliott loss, duplication, corruption,
//! reordering, rate and queue) and [`shaper::Shaper`], the sans-IO state machine of one
//! link direction that turns the model into verdicts (lost, dropped, or delivered at which
//! time). The orchestrator's wire engine drives it with the host's monotonic clock and
//! AF_PACKET frames; the simulator (`lightcone-sim`) with its virtual clock and datagrams.
//! Same model, same seed, same offers: same verdicts. [`tally::Tally`] counts what a
//! direction did (delivered, lost, duplicated, reordered, delay quantiles) the same way for
//! every driver. [`frame`] says what a datagram is on a lab's link (its frame length,
//! what a flipped bit does) for drivers that carry datagrams.
//!
//! No I/O: no sockets, clocks, threads or OS randomness (no tokio, nix, libc, pnet,
//! rtnetlink; `tests/check-core-deps.sh`).
pub mod frame;
pub mod model;
pub mod shaper;
pub mod tally;

#[cfg(test)]
mod tests {
    use crate::shaper::Shaper;
    use crate::tally::Tally;

    /// What one shaped link direction costs in memory besides its queued frames and its
    /// delay histogram: the twin holds millions of them.
    #[test]
    fn a_shaped_direction_costs_under_a_kilobyte() {
        let shaper = std::mem::size_of::<Shaper>();
        let tally = std::mem::size_of::<Tally>();
        eprintln!("Shaper {shaper} B, Tally {tally} B (counts only: no heap)");
        assert!(shaper + tally <= 1024, "{shaper} + {tally} bytes");
        assert_eq!(Tally::counts_only().delay_buckets(), 0);
    }
}
