//! Checks a recorded history (one `HistoryOp` JSON per line, as `lightcone run` writes
//! `history.jsonl`) for causal anomalies and prints each one, explained.
//!
//! `cargo run -p lightcone-agent --example check_history -- RUN_DIR/history.jsonl`

use std::io::BufRead;

use lightcone_core::causal::{check, HistoryOp};

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check_history HISTORY.jsonl");
        return std::process::ExitCode::from(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut history = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{path}:{}: {e}", n + 1);
                return std::process::ExitCode::from(2);
            }
        };
        match serde_json::from_str::<HistoryOp>(&line) {
            Ok(op) => history.push(op),
            Err(e) => {
                eprintln!("{path}:{}: {e}", n + 1);
                return std::process::ExitCode::from(2);
            }
        }
    }
    match check(&history) {
        Ok(r) => {
            for a in &r.anomalies {
                println!(
                    "{:?} at op {} ({:?}): {}",
                    a.kind, a.op, a.related, a.explanation
                );
            }
            println!(
                "{} ops, {} reads checked, {} anomalies, {} misses not judged (indeterminate \
                 writes of unknown context)",
                r.ops_checked,
                r.reads_checked,
                r.anomalies.len() as u64 + r.unlisted,
                r.misses_excused
            );
            if r.anomalies.is_empty() && r.unlisted == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("history not checkable: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
