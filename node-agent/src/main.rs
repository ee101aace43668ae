//! `lightcone-agent --config FILE`: runs one node agent (see `lightcone_agent::driver`).
//! `lightcone-agent --group SOCKET --directory FILE`: hosts many tiles in this process,
//! started and crashed one by one over `SOCKET` (see `lightcone_agent::group`).

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
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    config: Option<PathBuf>,
    /// Host many tiles: the unix socket on which the supervisor starts and crashes them.
    #[arg(long, requires = "directory")]
    group: Option<PathBuf>,
    /// With `--group`: every node of the lab (JSON list of peers), shared by the tiles.
    #[arg(long, requires = "group")]
    directory: Option<PathBuf>,
    /// With `--group`: tiles to start at launch, all at once (JSON list of
    /// `{"id", "config", "netns"}`); the group's socket appears once all run.
    #[arg(long, requires = "group")]
    tiles: Option<PathBuf>,
    /// With `--tiles`: prepare the listed tiles, then hold them until SIGUSR1.
    #[arg(long, requires = "tiles")]
    hold: bool,
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
        if let (Some(socket), Some(directory)) = (&args.group, &args.directory) {
            lightcone_agent::group::raise_fd_limit();
            return lightcone_agent::group::serve(
                socket,
                directory,
                args.tiles.as_deref(),
                args.hold,
                stop,
            )
            .await
            .context("tile group failed");
        }
        let path = args.config.context("--config or --group is required")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cfg: AgentConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        lightcone_agent::driver::run(cfg, stop)
            .await
            .context("agent failed")
    })
}
