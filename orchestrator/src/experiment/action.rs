//! The typed payloads a scenario's verbs and its expanded timeline share: an [`Action`] is
//! one change played through the supervisor at one time (a link set, down or up, a node
//! fault, a workload start, or a marker), and a verb that is a single action
//! ([`Verb::Once`](super::scenario::Verb::Once)) carries it as written. Node faults are the
//! typed payloads of [`crate::fault`], parsed once where the scenario is read.

use serde::Serialize;

use crate::fault::{ByzantineFault, ClockFault, NodeFault};
use crate::lab::LinkChange;
use crate::parse::units;

/// One primitive change at an emulated time.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    LinkDown {
        a: String,
        b: String,
    },
    LinkUp {
        a: String,
        b: String,
    },
    LinkSet {
        a: String,
        b: String,
        change: LinkChange,
    },
    Crash {
        node: String,
    },
    Restart {
        node: String,
    },
    /// A partition began (its links follow as `LinkDown`); a marker for reports.
    Partition {
        groups: Vec<Vec<String>>,
    },
    /// A heal began (its links follow as `LinkUp`).
    Heal,
    /// A workload starts on the named nodes.
    LoadStart {
        nodes: Vec<String>,
        #[serde(flatten)]
        load: Load,
    },
    /// A clock fault, played through `POST /api/nodes/{node}/clock`. Recorded as
    /// `"verb": …, "node": …, "request": {…}` (the request is the agent's JSON).
    #[serde(serialize_with = "clock_fields")]
    Clock {
        node: String,
        fault: ClockFault,
    },
    /// Make a node byzantine (no behaviour: honest again).
    Byzantine {
        node: String,
        behaviour: ByzantineFault,
    },
    /// `thief` holds `node`'s signing key and signs data frames as `node` to `node`'s cell
    /// (issue 17's key compromise; a test fault until `thief` is made honest again).
    StealKey {
        node: String,
        thief: String,
    },
    /// The lab's authorities rotate `node`'s key (issue 17): a new key certified by their
    /// threshold signature, handed to the node, flooded to the lab; the node stays in service.
    RotateKey {
        node: String,
    },
    /// `by`'s cell's BFT group is asked to revoke `node`'s key.
    Revoke {
        node: String,
        by: String,
    },
    /// An `objects` workload starts on the named nodes (issue 16).
    ObjectsStart {
        nodes: Vec<String>,
        #[serde(flatten)]
        objects: ObjectLoad,
    },
    /// Crash the nodes holding `shards` shards of each named object, by the placement its
    /// put recorded (resolved when played; every node crashed is marked).
    CrashHolders {
        objects: Vec<String>,
        shards: u16,
        /// Nodes never crashed for it (`*` globs), e.g. the cells' gateways.
        except: Vec<String>,
    },
    /// Submit `count` tasks to a node (issue 15: the thermal subsystem places them under
    /// leases).
    Task {
        node: String,
        count: u32,
        spec: lightcone_core::heat::task::TaskSpec,
    },
    /// A staged rollout of an agent build (issue 18), canary cell first, to the end of its
    /// stages or until a gate halts it; the timeline waits for it (it is the timeline's
    /// last step). `build` names a variant of the agent (the twin's model of it, the lab's
    /// binary of it) or, in a lab, an agent binary's path.
    Rollout {
        build: String,
        canary: String,
        soak_ns: u64,
    },
}

/// The agent builds a rollout can name (the agent's cargo features, `standard` without):
/// what the twin models each as, against the build its tiles run now.
pub const ROLLOUT_BUILDS: &[&str] = &[
    "standard",
    "variant-b",
    "defect-drop-forward",
    "protocol-n1",
];

impl Action {
    /// A one-line description for progress output and event logs.
    pub fn describe(&self) -> String {
        match self {
            Action::LinkDown { a, b } => format!("link_down {a}--{b}"),
            Action::LinkUp { a, b } => format!("link_up {a}--{b}"),
            Action::LinkSet { a, b, change } => {
                let mut s = format!("link_set {a}--{b}");
                for (k, v) in [
                    ("delay", &change.delay),
                    ("jitter", &change.jitter),
                    ("loss", &change.loss),
                    ("rate", &change.rate),
                    ("duplicate", &change.duplicate),
                    ("corrupt", &change.corrupt),
                    ("reorder", &change.reorder),
                ] {
                    if let Some(v) = v {
                        s += &format!(" {k}={v}");
                    }
                }
                s
            }
            Action::Crash { node } => format!("crash {node}"),
            Action::Restart { node } => format!("restart {node}"),
            Action::Partition { groups } => format!(
                "partition {}",
                groups
                    .iter()
                    .map(|g| format!("[{}]", g.join(" ")))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            Action::Heal => "heal".into(),
            Action::LoadStart { nodes, load } => format!(
                "load on {} nodes, {} keys per cell, one op per {} per node, until {}, {} writes",
                nodes.len(),
                load.keys,
                units::fmt_ns(load.interval_ns),
                units::fmt_ns(load.until_ns),
                load.durability
            ),
            Action::Clock { node, fault } => format!(
                "{} {node} {}",
                fault.verb(),
                serde_json::to_string(&fault.request()).unwrap_or_default()
            ),
            Action::Byzantine { node, behaviour } if behaviour.is_honest() => {
                format!("byzantine {node}: honest again")
            }
            Action::Byzantine { node, behaviour } => {
                format!("byzantine {node}: {}", behaviour.names().join(", "))
            }
            Action::StealKey { node, thief } => format!("steal_key {node}: {thief} signs as it"),
            Action::RotateKey { node } => format!("rotate_key {node}"),
            Action::Revoke { node, by } => {
                format!("revoke {node}'s key: asked of {by}'s cell group")
            }
            Action::ObjectsStart { nodes, objects: o } => format!(
                "objects on {} nodes: {} objects `{}-NNNN` of {} B, one per {}, until {}",
                nodes.len(),
                o.count,
                o.prefix,
                o.size_bytes,
                units::fmt_ns(o.interval_ns),
                units::fmt_ns(o.until_ns)
            ),
            Action::CrashHolders {
                objects,
                shards,
                except,
            } => format!(
                "crash the holders of {shards} shards of each of {}{}",
                objects.join(" "),
                if except.is_empty() {
                    String::new()
                } else {
                    format!(", never {}", except.join(" "))
                }
            ),
            Action::Task { node, count, spec } => format!(
                "task {node}: {count} × {} units for {}, {:?}",
                spec.compute,
                units::fmt_ns(spec.duration_ns),
                spec.class
            ),
            Action::Rollout {
                build,
                canary,
                soak_ns,
            } => format!(
                "rollout of {build}, canary cell {canary}, soak {}",
                units::fmt_ns(*soak_ns)
            ),
        }
    }
    /// Kind name for events and plot markers.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::LinkDown { .. } => "link_down",
            Action::LinkUp { .. } => "link_up",
            Action::LinkSet { .. } => "link_set",
            Action::Crash { .. } => "crash",
            Action::Restart { .. } => "restart",
            Action::Partition { .. } => "partition",
            Action::Heal => "heal",
            Action::LoadStart { .. } => "load",
            Action::Clock { .. } => "clock",
            Action::Byzantine { behaviour, .. } if behaviour.is_honest() => "honest",
            Action::Byzantine { .. } => "byzantine",
            Action::Task { .. } => "task",
            Action::StealKey { .. } => "steal_key",
            Action::RotateKey { .. } => "rotate_key",
            Action::Revoke { .. } => "revoke",
            Action::ObjectsStart { .. } => "objects",
            Action::CrashHolders { .. } => "crash_holders",
            Action::Rollout { .. } => "rollout",
        }
    }

    /// The node this action faults and the fault, if it is a node fault (crash, restart,
    /// clock, byzantine): what the runner sends to the supervisor.
    pub fn node_fault(&self) -> Option<(&str, NodeFault)> {
        match self {
            Action::Crash { node } => Some((node, NodeFault::Crash)),
            Action::Restart { node } => Some((node, NodeFault::Restart)),
            Action::Clock { node, fault } => Some((node, NodeFault::Clock(*fault))),
            Action::Byzantine { node, behaviour } => {
                Some((node, NodeFault::Byzantine(behaviour.clone())))
            }
            _ => None,
        }
    }
}

/// A workload: one sequential client session per node, writing unique values and reading
/// keys of its cell through the supervisor, one op every `interval_ns`. The scenario verb
/// `load` and the expanded action carry it alike; [`Load::default`] holds the verb's
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    /// Keys per cell, 1..=1000.
    pub keys: u32,
    pub interval_ns: u64,
    /// When the sessions stop (absolute, emulated).
    pub until_ns: u64,
    /// Share of ops that write.
    pub write_fraction: f64,
    /// Share of ops that, instead of a key-value op, send a message (one datagram over the
    /// overlay) to a random node outside the session's cell: across levels.
    pub message_fraction: f64,
    /// When the agent acknowledges a write (`durability: local | cell`, default `cell`: once
    /// f + 1 cell members hold it; see `lightcone_core::kv::Durability`).
    pub durability: lightcone_core::kv::Durability,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            keys: 8,
            interval_ns: 200_000_000,
            until_ns: 0,
            write_fraction: 0.5,
            message_fraction: 0.0,
            durability: lightcone_core::kv::Durability::default(),
        }
    }
}

/// An `objects` workload (issue 16): objects `{prefix}-0000`, `{prefix}-0001`, … of
/// `size_bytes` seeded bytes, one put every `interval_ns`, round-robin over the workload's
/// nodes, until `count` were put or `until_ns` (absolute, emulated).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectLoad {
    pub prefix: String,
    pub count: u32,
    pub interval_ns: u64,
    pub size_bytes: u32,
    pub until_ns: u64,
}

/// Most objects one `objects` step may put.
pub const MAX_OBJECTS: u32 = 10_000;
/// Largest object of an `objects` step (the agent's limit, `StoreParams::max_object`).
pub const MAX_OBJECT_BYTES: u32 = 64 << 10;

impl ObjectLoad {
    /// The bytes of object `i`: seeded by the scenario's seed, the prefix and `i`, so the
    /// runner and the twin write (and check) the same bytes for a seed.
    pub fn bytes(&self, seed: u64, i: u32) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut h: u64 = seed ^ 0x6f62_6a65_6374_7321;
        for b in self.prefix.bytes() {
            h = h.rotate_left(8) ^ u64::from(b);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            h ^ u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut v = vec![0u8; self.size_bytes as usize];
        rng.fill_bytes(&mut v);
        v
    }
    /// The name of object `i`.
    pub fn name(&self, i: u32) -> String {
        format!("{}-{i:04}", self.prefix)
    }
    /// The emulated times of the puts, from the step's `at_ns`: one per interval, fewer
    /// than `count` if `until_ns` comes first.
    pub fn times(&self, at_ns: u64) -> Vec<u64> {
        (0..self.count as u64)
            .map(|i| at_ns.saturating_add(i.saturating_mul(self.interval_ns)))
            .take_while(|t| *t < self.until_ns)
            .collect()
    }
}

/// The SHA-256 (hex) of each of the n shards `object` encodes to under `class`: the ground
/// truth a held shard is checked against.
pub fn shard_hashes(
    object: &[u8],
    class: &lightcone_core::store::Class,
) -> Result<Vec<String>, lightcone_core::store::StoreError> {
    use lightcone_core::store::{codec, machine::hex};
    Ok(codec::encode(object, class)?
        .iter()
        .map(|s| hex(&codec::shard_hash(s)))
        .collect())
}

/// The recorded fields of [`Action::Clock`].
fn clock_fields<S: serde::Serializer>(
    node: &String,
    fault: &ClockFault,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(3))?;
    m.serialize_entry("verb", fault.verb())?;
    m.serialize_entry("node", node)?;
    m.serialize_entry("request", &fault.request())?;
    m.end()
}
