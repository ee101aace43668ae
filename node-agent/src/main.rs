//! `lightcone-agent --config FILE`: runs one node agent (see `lightcone_agent::driver`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lightcone_core::config::AgentConfig;

/// The lightcone node agent: SWIM/Lifeguard membership, overlay routing and causal state
/// over UDP, with an HTTP control/metrics API on a unix socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Agent configuration (JSON written by the orchestrator).
    #[arg(long)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg: AgentConfig = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.config.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        lightcone_agent::driver::run(cfg, stop)
            .await
            .context("agent failed")
    })
}
