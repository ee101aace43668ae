//! The node's time layer: its [`NodeClock`] (from `lightcone_timing`), the pulsar sky every
//! node of a lab shares, and the clock configuration derived from the agent's.

use std::sync::Arc;

use lightcone_timing::{
    ClockFault, NodeClock, NodeClockConfig, NodeRole, Outgoing, PulsarArray, ServerLink,
};

use crate::addr::Role;
use crate::config::{AgentConfig, ConfigError};

/// The node's time layer: its clock, the pulsar sky every node shares, scratch space.
#[derive(Debug, Clone)]
pub struct TimeLayer {
    pub(crate) clock: NodeClock,
    pub(crate) sky: Arc<PulsarArray>,
    pub(crate) out: Vec<Outgoing>,
    pub(crate) faults: Vec<ClockFault>,
}

impl TimeLayer {
    pub fn new(clock: NodeClock, sky: Arc<PulsarArray>) -> TimeLayer {
        TimeLayer {
            clock,
            sky,
            out: Vec::new(),
            faults: Vec::new(),
        }
    }
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }
}

/// The clock configuration of an agent: role from the directory (authority → stratum 0,
/// gateway → stratum 1, tile → cell holdover), position from the directory, servers and
/// rates from `cfg.time`. `None` when the configuration has no time section.
pub fn clock_config(cfg: &AgentConfig) -> Result<Option<NodeClockConfig>, ConfigError> {
    if cfg.time.is_none() {
        return Ok(None);
    }
    let me = cfg
        .peers
        .get(cfg.id as usize)
        .ok_or(ConfigError::UnknownSelf(cfg.id))?;
    clock_config_of(cfg, me.role, me.position_au, cfg.peers.len())
}

/// [`clock_config`] with role and position from a directory shared by the process's nodes
/// (`cfg.peers` is not read): the same configuration for a directory built from them.
pub fn clock_config_in(
    cfg: &AgentConfig,
    dir: &crate::directory::Directory,
) -> Result<Option<NodeClockConfig>, ConfigError> {
    if cfg.time.is_none() {
        return Ok(None);
    }
    let me = dir.get(cfg.id).ok_or(ConfigError::UnknownSelf(cfg.id))?;
    clock_config_of(cfg, me.role, me.position_au, dir.len())
}

fn clock_config_of(
    cfg: &AgentConfig,
    role: Role,
    position_au: [f64; 3],
    nodes: usize,
) -> Result<Option<NodeClockConfig>, ConfigError> {
    let Some(t) = &cfg.time else {
        return Ok(None);
    };
    let role = match role {
        Role::Authority => NodeRole::Authority,
        Role::Gateway => NodeRole::Stratum1,
        Role::Tile => NodeRole::Cell,
    };
    let mut servers = Vec::new();
    for s in &t.servers {
        if *s as usize >= nodes {
            return Err(ConfigError::UnknownTimeServer(*s));
        }
        servers.push(ServerLink {
            server: *s,
            asymmetry_cal_s: 0.0,
            asymmetry_bound_s: t.asymmetry_bound_s,
        });
    }
    let mut c = NodeClockConfig::preset(
        cfg.id,
        role,
        position_au,
        servers,
        lightcone_timing::derive_seed(cfg.seed, 0x7469_6d65),
    );
    // With the start-up burst (a 16th of the interval) so a node has time within
    // seconds of its start, not eight intervals.
    c.sync = c.sync.with_poll_interval(t.poll_interval_ns);
    c.pulsar.integration_s = t.pulsar_integration_s;
    Ok(Some(c))
}

/// The pulsar sky of a lab (the same for every node of a lab seed).
pub fn lab_sky(sky_seed: u64) -> PulsarArray {
    PulsarArray::standard(sky_seed)
}
