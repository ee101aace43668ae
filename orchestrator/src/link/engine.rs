//! The link engine of a running lab, behind one type: [`LinkEngine`]. The supervisor
//! starts it once from the plan, then calls only its operations, whatever carries the
//! links:
//!
//! | engine | what shapes a link | `set` (model, up/down) | `stats` / `families` |
//! | --- | --- | --- | --- |
//! | wire | [`WireEngine`] in user space, both ends in the wire namespace | the loop's diff | its own counters / its registry |
//! | netem | a netem root qdisc on each veth end ([`netem::apply`]); with a rate, tbf → prio (Class A first) below it ([`netem::prio`]) | qdisc replaced, interface set up or down, per end | none / each end's qdisc read now |
//! | unshaped | nothing: plain veth pairs | interface set up or down, per end | none / none |
//!
//! # Operations
//! [`LinkEngine::start`] (adds every planned link), [`LinkEngine::add_link`],
//! [`LinkEngine::set`], [`LinkEngine::remove`], [`LinkEngine::stats`],
//! [`LinkEngine::families`] and, at teardown, [`LinkEngine::stop`].
//!
//! `add_link`, `set`, `remove` and `families` do what can be done at once synchronously
//! (the wire engine's calls are quick channel round trips) and return the part that waits
//! on the kernel (netlink, for netem and unshaped links) as a [`Pending`] future that owns
//! what it needs. A caller that keeps the engine behind a `std::sync::Mutex` calls the
//! operation under the lock and awaits the future after releasing it: the lab's lock is
//! never held across a netlink round trip.
//!
//! # Why an enum, not a trait
//! The set of engines is closed and chosen once per lab at `up` ([`EngineChoice`]); the
//! supervisor holds exactly one. An enum keeps the operations plain methods (no boxed
//! trait objects with async methods, no `Send` bounds spelled on a trait), lets an engine
//! keep its own types (the wire engine's `stop` hands back the thread closing its sockets),
//! and makes the compiler list every `match` a new engine must answer: the multi-host VXLAN
//! links of a later issue become a fourth variant here and nowhere else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::proto::MetricFamily;
use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::metrics::{self, NetemSample};
use super::netem::{self, NetemError};
use super::stats::{Direction, LinkStats};
use super::wire::{ifindex_of, PortSpec, WireEngine, WireError, WireMetrics};
use crate::kernel::{self, KernelError, Netns};
use crate::plan::{Endpoint, Plan};
use lightcone_link::model::LinkModel;

/// Which link engine carries the lab's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// netem if the kernel has it, else wire.
    Auto,
    /// The kernel's netem qdisc on each veth end.
    Netem,
    /// lightcone's userspace emulator (AF_PACKET), works on any kernel.
    Wire,
    /// Plain veth pairs, no shaping at all (for bring-up benchmarks and debugging).
    None,
}

/// Decide the engine for `auto`, with the reason shown to the user.
pub fn resolve_engine(choice: EngineChoice) -> (EngineChoice, String) {
    match choice {
        EngineChoice::Auto => {
            let a = netem::kernel_has_netem();
            if a.is_available() {
                (EngineChoice::Netem, format!("auto: {a}"))
            } else {
                (
                    EngineChoice::Wire,
                    format!("auto: {a}; using the userspace wire engine"),
                )
            }
        }
        EngineChoice::Netem => (EngineChoice::Netem, "asked for netem".into()),
        EngineChoice::Wire => (EngineChoice::Wire, "asked for wire".into()),
        EngineChoice::None => (EngineChoice::None, "asked for unshaped links".into()),
    }
}

/// Why an engine operation failed. Each variant's own doc says what was left changed; the
/// message is the underlying error's, unchanged.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The wire engine refused (see [`WireError`]: nothing changed on that link).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A netem qdisc could not be installed, replaced, removed or read (see
    /// [`NetemError`]); the ends handled before this one keep their new state.
    #[error(transparent)]
    Netem(#[from] NetemError),
    /// A namespace, netlink socket or interface call failed; the ends handled before this
    /// one keep their new state.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// The part of an operation that waits on the kernel, owning what it needs (see the module
/// doc); already complete for the wire engine.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'static>>;

fn done<T: Send + 'static>(r: Result<T, EngineError>) -> Pending<T> {
    Box::pin(std::future::ready(r))
}

/// The engine carrying one lab's links (see the module doc). Links are named by their
/// index in the plan the engine was started with.
pub enum LinkEngine {
    /// Userspace shaping of every link on one event-loop thread.
    Wire(Box<WireLinks>),
    /// netem qdiscs on the veth ends.
    Netem(VethLinks),
    /// Plain veth pairs.
    Unshaped(VethLinks),
}

/// The wire engine with the plan it serves and the registry holding its series.
pub struct WireLinks {
    plan: Arc<Plan>,
    engine: WireEngine,
    registry: Registry,
}

/// Links that are the veth pairs themselves, handled end by end in each node's namespace
/// (netem puts a qdisc on each end; unshaped links only go up and down).
pub struct VethLinks {
    plan: Arc<Plan>,
}

impl LinkEngine {
    /// Start the engine `choice` names (`Auto` must have been resolved by
    /// [`resolve_engine`]; it is taken as unshaped) and add every link of `plan` with its
    /// planned model. On error the wire engine is stopped (its sockets closed); netem
    /// qdiscs already installed stay until the lab's namespaces go.
    pub async fn start(choice: EngineChoice, plan: &Plan) -> Result<LinkEngine, EngineError> {
        let plan = Arc::new(plan.clone());
        let engine = match choice {
            EngineChoice::Wire => {
                let registry = Registry::new();
                let metrics = WireMetrics::register(&registry, &plan.lab)?;
                let engine = WireEngine::start_with_metrics(plan.time_scale, Some(metrics))?;
                LinkEngine::Wire(Box::new(WireLinks {
                    plan: plan.clone(),
                    engine,
                    registry,
                }))
            }
            EngineChoice::Netem => LinkEngine::Netem(VethLinks { plan: plan.clone() }),
            EngineChoice::None | EngineChoice::Auto => {
                return Ok(LinkEngine::Unshaped(VethLinks { plan }))
            }
        };
        if let LinkEngine::Wire(w) = &engine {
            // Every end's ifindex looked up in one visit to the wire namespace; the engine
            // then serves them all through its one socket there (see `wire`'s module doc:
            // no descriptor per end, so a 10⁴-node lab's 21,220 ends fit any fd limit).
            let ns = Netns::open(&plan.wire_netns)?;
            let ports = ns
                .run(|| {
                    plan.links
                        .iter()
                        .map(|l| Ok([ifindex_of(&l.a.wire_ifname)?, ifindex_of(&l.b.wire_ifname)?]))
                        .collect::<Result<Vec<[u32; 2]>, WireError>>()
                })?
                .map_err(|e| match e {
                    WireError::Sys { what, source } => WireError::Sys {
                        what: format!("{what} (namespace {})", plan.wire_netns),
                        source,
                    },
                    e => e,
                })?;
            let port = |ifindex| PortSpec::Index {
                netns: plan.wire_netns.clone(),
                ifindex,
            };
            for (l, [a, b]) in plan.links.iter().zip(ports) {
                // The reverse direction gets its own seed, so the two directions draw
                // independently.
                w.engine.add_link(
                    &l.name,
                    port(a),
                    port(b),
                    l.model.clone(),
                    l.model.reversed(),
                )?;
            }
            return Ok(engine);
        }
        for l in &plan.links {
            // netem has no seed of ours: both directions take the model as it is.
            engine.add_link(l.index, &l.model, &l.model.clone()).await?;
        }
        Ok(engine)
    }

    /// The line `up` prints once the engine carries the lab's links (none when unshaped).
    pub fn describe(&self) -> Option<String> {
        match self {
            LinkEngine::Wire(w) => Some(format!(
                "wire engine forwarding {} links",
                w.plan.links.len()
            )),
            LinkEngine::Netem(n) => Some(format!(
                "netem qdiscs on {} interfaces",
                2 * n.plan.links.len()
            )),
            LinkEngine::Unshaped(_) => None,
        }
    }

    /// Whether the engine shapes links at all (delay, loss, jitter, rate); unshaped links
    /// only go up and down.
    pub fn shapes(&self) -> bool {
        !matches!(self, LinkEngine::Unshaped(_))
    }

    /// Carry link `link` of the plan, shaped by `a_to_b` and `b_to_a`, up. On error the
    /// link is not carried by the wire engine; for netem see [`EngineError`].
    pub fn add_link(&self, link: usize, a_to_b: &LinkModel, b_to_a: &LinkModel) -> Pending<()> {
        match self {
            LinkEngine::Wire(w) => {
                let l = &w.plan.links[link];
                let port = |e: &Endpoint| PortSpec::Netns {
                    netns: w.plan.wire_netns.clone(),
                    ifname: e.wire_ifname.clone(),
                };
                done(
                    w.engine
                        .add_link(
                            &l.name,
                            port(&l.a),
                            port(&l.b),
                            a_to_b.clone(),
                            b_to_a.clone(),
                        )
                        .map_err(EngineError::from),
                )
            }
            LinkEngine::Netem(n) => {
                let plan = n.plan.clone();
                let models = [a_to_b.clone(), b_to_a.clone()];
                Box::pin(async move {
                    for (end, _, model) in ends(&plan, link, &models) {
                        let (h, idx) = open_end(&plan, end).await?;
                        netem::apply(&h, idx, model, plan.time_scale).await?;
                    }
                    Ok(())
                })
            }
            LinkEngine::Unshaped(_) => done(Ok(())),
        }
    }

    /// Carry this host's end of a link to another host (issue 19), built by
    /// `hosts::vxlan::build_cross`: the wire engine forwards between the end's wire
    /// interface and the VXLAN device `far_wire_ifname` beside it, shaping what this host
    /// sends by `out` and passing what arrives untouched (the sending host shaped it);
    /// netem shapes the VXLAN device in the node's namespace (`node_netns`, `ifname`) by
    /// `out`. The link is not in the plan: `lightcone link` does not change it yet.
    pub fn add_cross(
        &self,
        name: &str,
        node_netns: &str,
        ifname: &str,
        wire_ifname: &str,
        far_wire_ifname: &str,
        out: &LinkModel,
    ) -> Pending<()> {
        match self {
            LinkEngine::Wire(w) => {
                let port = |ifname: &str| PortSpec::Netns {
                    netns: w.plan.wire_netns.clone(),
                    ifname: ifname.to_string(),
                };
                done(
                    w.engine
                        .add_link(
                            name,
                            port(wire_ifname),
                            port(far_wire_ifname),
                            out.clone(),
                            LinkModel::default(),
                        )
                        .map_err(EngineError::from),
                )
            }
            LinkEngine::Netem(n) => {
                let time_scale = n.plan.time_scale;
                let (node_netns, ifname, out) =
                    (node_netns.to_string(), ifname.to_string(), out.clone());
                Box::pin(async move {
                    let ns = Netns::open(&node_netns)?;
                    let h = kernel::handle_in(Some(&ns))?;
                    let idx = kernel::ifindex(&h, &ifname).await?;
                    netem::apply(&h, idx, &out, time_scale).await?;
                    Ok(())
                })
            }
            LinkEngine::Unshaped(_) => done(Ok(())),
        }
    }

    /// Change this host's end of a link to another host (see [`LinkEngine::add_cross`]):
    /// what it sends is shaped by `out`, and the link is up or down (down: the wire engine
    /// discards both directions; netem and unshaped take the VXLAN device down).
    pub fn set_cross(
        &self,
        name: &str,
        node_netns: &str,
        ifname: &str,
        peer: (std::net::Ipv4Addr, [u8; 6]),
        out: &LinkModel,
        up: bool,
    ) -> Pending<()> {
        let netem = match self {
            LinkEngine::Wire(w) => {
                let r = w
                    .engine
                    .set_model(name, Some(out.clone()), Some(LinkModel::default()))
                    .and_then(|()| w.engine.set_up(name, up));
                return done(r.map_err(EngineError::from));
            }
            LinkEngine::Netem(_) => true,
            LinkEngine::Unshaped(_) => false,
        };
        let time_scale = self.plan().time_scale;
        let (node_netns, ifname, out) = (node_netns.to_string(), ifname.to_string(), out.clone());
        Box::pin(async move {
            let ns = Netns::open(&node_netns)?;
            let h = kernel::handle_in(Some(&ns))?;
            let idx = kernel::ifindex(&h, &ifname).await?;
            if netem {
                netem::apply(&h, idx, &out, time_scale).await?;
            }
            if up {
                kernel::set_up(&h, idx).await?;
                // Taking the device down flushed its permanent neighbour entry.
                kernel::netlink::add_neighbour(&h, idx, peer.0, peer.1).await?;
            } else {
                kernel::netlink::set_down(&h, idx).await?;
            }
            Ok(())
        })
    }

    /// Give link `link` these models and take it up or down. The wire engine applies the
    /// models as a diff (queued frames keep their times); on veth links each end's qdisc is
    /// replaced (netem) and the interface set up, with its permanent neighbour entry for
    /// the peer put back (taking it down flushed it), or down.
    pub fn set(
        &self,
        link: usize,
        a_to_b: &LinkModel,
        b_to_a: &LinkModel,
        up: bool,
    ) -> Pending<()> {
        let (plan, netem) = match self {
            LinkEngine::Wire(w) => {
                let name = &w.plan.links[link].name;
                let r = w
                    .engine
                    .set_model(name, Some(a_to_b.clone()), Some(b_to_a.clone()))
                    .and_then(|()| w.engine.set_up(name, up));
                return done(r.map_err(EngineError::from));
            }
            LinkEngine::Netem(n) => (n.plan.clone(), true),
            LinkEngine::Unshaped(n) => (n.plan.clone(), false),
        };
        let models = [a_to_b.clone(), b_to_a.clone()];
        Box::pin(async move {
            for (end, peer, model) in ends(&plan, link, &models) {
                let (h, idx) = open_end(&plan, end).await?;
                if netem {
                    netem::apply(&h, idx, model, plan.time_scale).await?;
                }
                if up {
                    kernel::set_up(&h, idx).await?;
                    // Taking the interface down flushed its permanent neighbour entry.
                    kernel::netlink::add_neighbour(&h, idx, peer.ip, peer.mac.0).await?;
                } else {
                    kernel::netlink::set_down(&h, idx).await?;
                }
            }
            Ok(())
        })
    }

    /// Stop carrying link `link`: the wire engine discards its queued frames and ignores its
    /// ends from then on; netem's qdiscs are removed (idempotent); unshaped links are left as they are.
    pub fn remove(&self, link: usize) -> Pending<()> {
        match self {
            LinkEngine::Wire(w) => done(
                w.engine
                    .remove_link(&w.plan.links[link].name)
                    .map_err(EngineError::from),
            ),
            LinkEngine::Netem(n) => {
                let plan = n.plan.clone();
                Box::pin(async move {
                    let l = &plan.links[link];
                    for end in [&l.a, &l.b] {
                        let (h, idx) = open_end(&plan, end).await?;
                        netem::remove(&h, idx).await?;
                    }
                    Ok(())
                })
            }
            LinkEngine::Unshaped(_) => done(Ok(())),
        }
    }

    /// Per-direction counters the engine keeps itself (the wire engine's), ordered by link
    /// name then direction. netem's counters live in the kernel and are read by
    /// [`LinkEngine::families`]; unshaped links count nothing.
    pub fn stats(&self) -> Vec<LinkStats> {
        match self {
            LinkEngine::Wire(w) => w.engine.stats(),
            LinkEngine::Netem(_) | LinkEngine::Unshaped(_) => Vec::new(),
        }
    }

    /// The link metric families as of now: the wire engine's registry, or every netem end's
    /// qdisc read now (ends that cannot be read are left out and logged). `delay_ns` is each
    /// link's configured one-way delay per direction (a→b, b→a), emulated ns, in plan order.
    pub fn families(&self, delay_ns: Vec<[u64; 2]>) -> Pending<Vec<MetricFamily>> {
        match self {
            LinkEngine::Wire(w) => done(Ok(w.registry.gather())),
            LinkEngine::Netem(n) => {
                let plan = n.plan.clone();
                Box::pin(async move {
                    let samples = netem_samples(&plan, &delay_ns).await;
                    Ok(metrics::netem_families(&plan.lab, &samples))
                })
            }
            LinkEngine::Unshaped(_) => done(Ok(Vec::new())),
        }
    }

    /// Stop the engine at teardown. The wire engine stops forwarding at once and closes its
    /// socket (one per namespace; the close waits for an RCU grace period) in the
    /// background: the returned thread ends when it is closed. Kernel-side links go with their namespaces.
    /// From then on the engine is unshaped: a late call changes at most interfaces that
    /// are about to go.
    pub fn stop(&mut self) -> Option<JoinHandle<()>> {
        let plan = self.plan().clone();
        match std::mem::replace(self, LinkEngine::Unshaped(VethLinks { plan })) {
            LinkEngine::Wire(w) => w.engine.stop(),
            LinkEngine::Netem(_) | LinkEngine::Unshaped(_) => None,
        }
    }

    fn plan(&self) -> &Arc<Plan> {
        match self {
            LinkEngine::Wire(w) => &w.plan,
            LinkEngine::Netem(n) | LinkEngine::Unshaped(n) => &n.plan,
        }
    }
}

/// The ends of link `link`: (this end, its peer, the model of the direction this end
/// sends), a first.
fn ends<'a>(
    plan: &'a Plan,
    link: usize,
    models: &'a [LinkModel; 2],
) -> [(&'a Endpoint, &'a Endpoint, &'a LinkModel); 2] {
    let l = &plan.links[link];
    [(&l.a, &l.b, &models[0]), (&l.b, &l.a, &models[1])]
}

/// A netlink handle in `end`'s node namespace and the index of its interface.
async fn open_end(plan: &Plan, end: &Endpoint) -> Result<(rtnetlink::Handle, u32), EngineError> {
    let ns = Netns::open(&plan.nodes[end.node].netns)?;
    let h = kernel::handle_in(Some(&ns))?;
    let idx = kernel::ifindex(&h, &end.ifname).await?;
    Ok((h, idx))
}

/// Read every link end's netem root qdisc, in its node's namespace (one netlink socket per
/// node, nodes read concurrently). An end that cannot be read (interface or qdisc gone in
/// a race with teardown) is left out of this scrape and logged.
async fn netem_samples(plan: &Plan, delay_ns: &[[u64; 2]]) -> Vec<NetemSample> {
    use std::collections::BTreeMap;
    // node → (link, interface, direction its egress carries, configured real delay)
    let mut by_node: BTreeMap<usize, Vec<(usize, &str, Direction, f64)>> = BTreeMap::new();
    for (l, d) in plan.links.iter().zip(delay_ns) {
        for (end, dir, ns) in [(&l.a, Direction::AToB, d[0]), (&l.b, Direction::BToA, d[1])] {
            let delay_s = ns as f64 / 1e9 / plan.time_scale;
            by_node
                .entry(end.node)
                .or_default()
                .push((l.index, &end.ifname, dir, delay_s));
        }
    }
    let reads = by_node.into_iter().map(|(node, ends)| async move {
        let netns = &plan.nodes[node].netns;
        let h = match Netns::open(netns).and_then(|ns| kernel::handle_in(Some(&ns))) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("netem stats: namespace {netns}: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (l, ifname, direction, configured_delay_s) in ends {
            let stats = match kernel::ifindex(&h, ifname).await {
                Ok(idx) => netem::stats(&h, idx).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stats {
                Ok(stats) => out.push(NetemSample {
                    link: plan.links[l].name.clone(),
                    direction,
                    stats,
                    configured_delay_s,
                }),
                Err(e) => tracing::warn!("netem stats: {netns} {ifname}: {e}"),
            }
        }
        out
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quickstart() -> Plan {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/quickstart.yaml");
        let topo = crate::topology::load(std::path::Path::new(path)).expect("quickstart loads");
        crate::plan::plan(&topo)
    }

    #[test]
    fn unshaped_links_take_no_models_and_count_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let plan = quickstart();
        let mut e = rt
            .block_on(LinkEngine::start(EngineChoice::None, &plan))
            .unwrap();
        assert!(!e.shapes());
        assert_eq!(e.describe(), None);
        assert!(e.stats().is_empty());
        let delays = plan.links.iter().map(|l| [l.model.delay_ns; 2]).collect();
        assert!(rt.block_on(e.families(delays)).unwrap().is_empty());
        let l = &plan.links[0];
        rt.block_on(e.add_link(0, &l.model, &l.model)).unwrap();
        rt.block_on(e.remove(0)).unwrap();
        assert!(e.stop().is_none());
    }

    #[test]
    fn engine_choices_name_their_reason() {
        for (c, why) in [
            (EngineChoice::Netem, "asked for netem"),
            (EngineChoice::Wire, "asked for wire"),
            (EngineChoice::None, "asked for unshaped links"),
        ] {
            assert_eq!(resolve_engine(c), (c, why.to_string()));
        }
    }
}
