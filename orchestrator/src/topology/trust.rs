//! The topology's `trust:` section (issue 17): which hardenings of the neighbourhood watch
//! every agent (and the twin's every node) runs. No section: all off, as before.
//!
//! ```yaml
//! trust:
//!   signed_claims: true   # suspect/dead claims carry their accuser's signature
//!   log_heads: true       # verdict logs with gossiped signed tree heads (split views)
//!   bft_verdicts: true    # convictions decided by the cell's BFT group, agreed by all
//!   bft_leases: true      # heat leases within a cell granted through its BFT log
//!   quarantine_term: 300s # a conviction's term before re-admission (doubled per repeat)
//!   evidence_ttl: 120s    # how long a node's own evidence against another holds
//! ```
//! Both durations are emulated time, at least 1 s.
use lightcone_core::config::TrustOptions;

use crate::parse::yaml::Node;
use crate::parse::Reader;

/// Keys of the `trust:` section.
pub(super) const TRUST_FIELDS: &[&str] = &[
    "signed_claims",
    "log_heads",
    "bft_verdicts",
    "bft_leases",
    "quarantine_term",
    "evidence_ttl",
];

/// Reads `trust:` (at `node`); `None` when a mistake was reported.
pub(super) fn read(r: &mut Reader, node: &Node) -> Option<TrustOptions> {
    let before = r.d.len();
    let top = r.fields(node, TRUST_FIELDS, "`trust`")?;
    let mut t = TrustOptions::default();
    for (k, v) in &top {
        let what = format!("`trust.{k}`");
        if matches!(*k, "quarantine_term" | "evidence_ttl") {
            let Some(ns) = r.duration(v, &what) else {
                continue;
            };
            if ns < 1_000_000_000 {
                r.d.error_help(
                    v.pos,
                    format!("{what} must be at least 1s (the watch judges once a second)"),
                    "write a duration such as 30s",
                );
                continue;
            }
            let ms = Some(ns / 1_000_000);
            match *k {
                "quarantine_term" => t.quarantine_term_ms = ms,
                _ => t.evidence_ttl_ms = ms,
            }
            continue;
        }
        let on = r.unit(v, &what, "true or false", |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("must be true or false, got {s:?}")),
        });
        let Some(on) = on else { continue };
        match *k {
            "signed_claims" => t.signed_claims = on,
            "log_heads" => t.log_heads = on,
            "bft_leases" => t.bft_leases = on,
            _ => t.bft_verdicts = on,
        }
    }
    (r.d.len() == before).then_some(t)
}

#[cfg(test)]
mod tests {
    use crate::topology::parse_str;
    use crate::topology::tests_support::error_of;
    use lightcone_core::config::TrustOptions;

    const LAB: &str = "name: t\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 1, cells: 2, tiles: 4 }\n";

    #[test]
    fn no_section_means_off_and_a_section_turns_options_on() {
        assert_eq!(parse_str(LAB, "t.yaml").unwrap().trust, None);
        let src = format!("{LAB}trust:\n  bft_verdicts: true\n  log_heads: false\n");
        let t = parse_str(&src, "t.yaml").unwrap().trust.unwrap();
        assert_eq!(
            t,
            TrustOptions {
                bft_verdicts: true,
                ..TrustOptions::default()
            }
        );
        let plan = crate::plan::plan(&parse_str(&src, "t.yaml").unwrap());
        assert_eq!(
            plan.tile_config(0, std::path::Path::new("/tmp")).trust,
            Some(t)
        );
    }

    #[test]
    fn bft_leases_is_read_and_reaches_every_tile_config() {
        let src = format!("{LAB}trust:\n  bft_leases: true\n");
        let t = parse_str(&src, "t.yaml").unwrap().trust.unwrap();
        assert_eq!(
            t,
            TrustOptions {
                bft_leases: true,
                ..TrustOptions::default()
            }
        );
        let plan = crate::plan::plan(&parse_str(&src, "t.yaml").unwrap());
        for tile in [0, 5] {
            let cfg = plan.tile_config(tile, std::path::Path::new("/tmp"));
            assert_eq!(cfg.trust, Some(t));
            // The agent applies it to its watch parameters, which turn the cell's BFT on.
            let mut p = lightcone_core::params::Params::default();
            p.watch.with_trust(cfg.trust.as_ref().unwrap());
            assert!(p.watch.bft_leases && !p.watch.bft_verdicts);
        }
    }

    #[test]
    fn quarantine_term_and_evidence_ttl_reach_the_watch() {
        let src = format!("{LAB}trust:\n  quarantine_term: 20s\n  evidence_ttl: 1.5s\n");
        let t = parse_str(&src, "t.yaml").unwrap().trust.unwrap();
        assert_eq!(t.quarantine_term_ms, Some(20_000));
        assert_eq!(t.evidence_ttl_ms, Some(1_500));
        let mut p = lightcone_core::params::Params::default();
        p.watch.with_trust(&t);
        assert_eq!(p.watch.quarantine_term, std::time::Duration::from_secs(20));
        assert_eq!(
            p.watch.evidence_ttl,
            std::time::Duration::from_millis(1_500)
        );
    }

    #[test]
    fn mistakes_are_located_and_say_what_is_wrong() {
        let cases = [
            (
                "  bft_verdicts: yes\n",
                "bad.yaml:6:",
                "must be true or false",
            ),
            (
                "  bft_verdict: true\n",
                "bad.yaml:6:",
                "did you mean `bft_verdicts`",
            ),
            ("  log_heads: 1\n", "bad.yaml:6:", "must be true or false"),
            (
                "  bft_lease: true\n",
                "bad.yaml:6:",
                "did you mean `bft_leases`",
            ),
            (
                "  quarantine_term: 500ms\n",
                "bad.yaml:6:",
                "must be at least 1s",
            ),
            ("  evidence_ttl: soon\n", "bad.yaml:6:", "not a duration"),
        ];
        for (section, at, says) in cases {
            let out = error_of(&format!("{LAB}trust:\n{section}"));
            assert!(out.contains(at) && out.contains(says), "{section}\n{out}");
        }
    }
}
