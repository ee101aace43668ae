//! The lab's authorities and what they sign: a FROST t-of-n threshold key made at `up`
//! ([`lightcone_core::trust::threshold::dkg`]) and the runtime orders of the tile kill
//! switch (issue 18, [`lightcone_core::update::dark`]) that `lightcone dark`/`undark` sign
//! with it.
//!
//! **Who holds the shares.** With at least [`MIN_AUTHORITY_NODES`] authority nodes in the
//! topology, each of them holds one share (its node id is its FROST id) and the threshold
//! is a majority, ⌊n/2⌋ + 1. With fewer (most topologies have one authority per layer, and
//! one share cannot make a threshold), the lab holds [`DEFAULT_SHARES`] shares with
//! threshold [`DEFAULT_THRESHOLD`] (3-of-5). The topology has no place to set this yet.
//! Either way every share is a 0600 file in the lab's `keys/` (the DKG runs in the
//! orchestrator, which already draws every node's identity on the same host; see the
//! threshold module on why), and agents get only the group's public key
//! ([`lightcone_core::config::AgentConfig::authorities_key_hex`]).
//!
//! **Protocol.** An agent given the group key runs protocol version 3 ([`crate::keys::protocol_for`]):
//! version 2, the core's default, cannot parse a relayed order. The twin (`simulate`)
//! keeps the plan's version (2) and gets no group key.
//!
//! **Serials.** An order carries a serial that every tile it reaches must see above the
//! last it accepted. The last serial signed is kept in `keys/order-serial`, written before
//! the order leaves, so serials only grow; the last dark and undark orders' bytes in
//! `keys/last-dark-order` and `keys/last-undark-order` (for `--replay-last`, which shows a
//! replay refused).
//!
//! **Scopes** are named as the topology names things: a node by its name, a cell as its
//! generated tiles' name prefix `l{layer}c{cluster}k{cell}`, a layer as `l{layer}`. A node
//! name wins over a cell or layer spelling it shadows.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lightcone_core::addr::HierAddr;
use lightcone_core::config::Role;
use lightcone_core::trust::threshold::{self, Group, Share, ThresholdError};
use lightcone_core::update::dark::Order;
use lightcone_core::wire::Dest;
use rand::{CryptoRng, RngCore};

use crate::keys::is_private;
use crate::plan::Plan;
use crate::state::{write_private, LabDir};

/// Authority nodes a topology needs for them to hold the shares themselves.
pub const MIN_AUTHORITY_NODES: usize = 3;
/// Shares the lab holds when the topology has too few authority nodes.
pub const DEFAULT_SHARES: u32 = 5;
/// The threshold of the lab-held shares.
pub const DEFAULT_THRESHOLD: u16 = 3;

/// Why the authorities' key could not be made, read or used. Nothing a running lab uses
/// was changed, except as a variant says.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("threshold key: {0}")]
    Threshold(#[from] ThresholdError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} lets group or others read it; a share must be 0600")]
    NotPrivate { path: String },
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
    #[error(
        "lab {lab} has no authorities' key (brought up without agents, or before `up` made one)"
    )]
    NoKey { lab: String },
    #[error("--shares {asked}: the lab holds {held} shares")]
    TooManyShares { asked: usize, held: usize },
    #[error("lab {lab} has no node, cell or layer {name:?}; it has {listed}")]
    NoScope {
        lab: String,
        name: String,
        listed: String,
    },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Who holds the lab's shares and the threshold (see the module docs).
pub fn members(plan: &Plan) -> (Vec<u32>, u16, Holders) {
    let nodes: Vec<u32> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == Role::Authority)
        .map(|(i, _)| i as u32)
        .collect();
    if nodes.len() >= MIN_AUTHORITY_NODES {
        let t = (nodes.len() / 2 + 1) as u16;
        (nodes, t, Holders::Nodes)
    } else {
        (
            (0..DEFAULT_SHARES).collect(),
            DEFAULT_THRESHOLD,
            Holders::Lab,
        )
    }
}

/// Whether the shares belong to the topology's authority nodes or to the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holders {
    Nodes,
    Lab,
}

/// The public record of the authorities (`keys/authorities.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub t: u16,
    pub members: Vec<u32>,
    pub holders: Holders,
    /// The group key agents check orders with (Ed25519, hex).
    pub group_key_hex: String,
    /// The group's public material (FROST public key package, hex).
    pub public_hex: String,
}

fn record_path(dir: &LabDir) -> PathBuf {
    dir.keys().join("authorities.json")
}

/// Where authority `id`'s share lives (hex, 0600).
pub fn share_path(dir: &LabDir, id: u32) -> PathBuf {
    dir.keys().join(format!("authority-{id}.share"))
}

fn serial_path(dir: &LabDir) -> PathBuf {
    dir.keys().join("order-serial")
}

fn last_order_path(dir: &LabDir, dark: bool) -> PathBuf {
    dir.keys().join(if dark {
        "last-dark-order"
    } else {
        "last-undark-order"
    })
}

/// Runs the DKG for `plan`'s authorities, writes every share 0600 and the public record;
/// returns the record (its `group_key_hex` goes into every agent's configuration).
pub fn generate(
    dir: &LabDir,
    plan: &Plan,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Record, AuthorityError> {
    let (ids, t, holders) = members(plan);
    let (shares, group) = threshold::dkg(&ids, t, rng)?;
    for (id, s) in &shares {
        let p = share_path(dir, *id);
        write_private(&p, hex::encode(s.to_bytes()?).as_bytes()).map_err(io(&p))?;
    }
    let record = Record {
        t,
        members: ids,
        holders,
        group_key_hex: hex::encode(group.key.as_bytes()),
        public_hex: hex::encode(group.public_bytes()?),
    };
    let p = record_path(dir);
    let json = serde_json::to_vec_pretty(&record).map_err(|e| AuthorityError::Corrupt {
        path: p.display().to_string(),
        why: e.to_string(),
    })?;
    write_private(&p, &json).map_err(io(&p))?;
    // A new group: serials start again (agents of this lab start from none).
    let _ = std::fs::remove_file(serial_path(dir));
    for dark in [true, false] {
        let _ = std::fs::remove_file(last_order_path(dir, dark));
    }
    Ok(record)
}

/// The lab's authorities' record, if `up` made one.
pub fn record(dir: &LabDir) -> Result<Record, AuthorityError> {
    let p = record_path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AuthorityError::NoKey {
                lab: dir.lab.clone(),
            })
        }
        Err(e) => return Err(io(&p)(e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| AuthorityError::Corrupt {
        path: p.display().to_string(),
        why: e.to_string(),
    })
}

/// The group and the first `n` shares (in member order); each share file must be 0600.
pub fn group_and_shares(dir: &LabDir, n: usize) -> Result<(Group, Vec<Share>), AuthorityError> {
    let r = record(dir)?;
    if n > r.members.len() {
        return Err(AuthorityError::TooManyShares {
            asked: n,
            held: r.members.len(),
        });
    }
    let corrupt = |p: &std::path::Path, why: String| AuthorityError::Corrupt {
        path: p.display().to_string(),
        why,
    };
    let rp = record_path(dir);
    let public = hex::decode(&r.public_hex).map_err(|e| corrupt(&rp, e.to_string()))?;
    let group = Group::from_parts(r.t, r.members.clone(), &public)?;
    let mut shares = Vec::with_capacity(n);
    for id in r.members.iter().take(n) {
        let p = share_path(dir, *id);
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        if !is_private(&p) {
            return Err(AuthorityError::NotPrivate {
                path: p.display().to_string(),
            });
        }
        let b = hex::decode(text.trim()).map_err(|e| corrupt(&p, e.to_string()))?;
        shares.push(Share::from_bytes(*id, &b)?);
    }
    Ok((group, shares))
}

/// The file of the lab's approved agent builds (issue 18's attestation): one hex-encoded,
/// threshold-signed `BuildApproval` log entry per line, in the order approved.
pub fn approvals_path(dir: &LabDir) -> PathBuf {
    dir.path.join("approved-builds")
}

/// The lab's approved agent builds (hex entries), for agents' configurations; none when
/// the file is missing.
pub fn approvals(dir: &LabDir) -> Vec<String> {
    entry_lines(&approvals_path(dir))
}

/// The non-empty lines (hex entries) of a file of entries; none when it is missing.
fn entry_lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Where the lab keeps the key certificates its authorities issued after `up` (issue 17's
/// key rotation): one hex entry a line, 0600.
pub fn certificates_path(dir: &LabDir) -> PathBuf {
    dir.path.join("certificates")
}

/// The lab's key certificates (hex entries, oldest first), for agents' configurations;
/// none when the file is missing.
pub fn certificates(dir: &LabDir) -> Vec<String> {
    entry_lines(&certificates_path(dir))
}

/// Node `subject`'s newest certified key after `up` and its serial, if it was rotated.
pub fn rotated_key(dir: &LabDir, subject: u32) -> Option<([u8; 32], u64)> {
    certificates(dir)
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|b| lightcone_core::trust::log::Entry::decode(&b).ok())
        .filter(|e| {
            e.kind == lightcone_core::trust::log::EntryKind::Certificate && e.subject == subject
        })
        .filter_map(|e| {
            let key: [u8; 32] = e.body.get(..32)?.try_into().ok()?;
            let serial = u64::from_be_bytes(e.body.get(32..40)?.try_into().ok()?);
            Some((key, serial))
        })
        .max_by_key(|(_, serial)| *serial)
}

/// Certifies `key` as node `subject`'s (a rotation): t of the authorities' shares sign a
/// [`threshold::Certificate`] with the next serial (1 + the node's newest). Returns its
/// entry (hex) and serial; nothing is written (see [`add_certificate`]).
pub fn certify_key(
    dir: &LabDir,
    subject: u32,
    key: [u8; 32],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(String, u64), AuthorityError> {
    let serial = rotated_key(dir, subject).map_or(1, |(_, s)| s + 1);
    let r = record(dir)?;
    let (group, shares) = group_and_shares(dir, usize::from(r.t))?;
    let signers: Vec<&Share> = shares.iter().collect();
    let c = threshold::Certificate {
        subject,
        key,
        serial,
        not_after_ns: u64::MAX,
    };
    let sig = threshold::sign(&group, &signers, &c.message(), rng)?;
    Ok((hex::encode(c.entry(&sig).encode()), serial))
}

/// Adds a certificate entry (hex) to [`certificates_path`]: agents started from then on
/// are configured with it.
pub fn add_certificate(dir: &LabDir, entry_hex: &str) -> std::io::Result<()> {
    let p = certificates_path(dir);
    let mut text = certificates(dir).join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(entry_hex);
    text.push('\n');
    write_private(&p, text.as_bytes())
}

/// Approves the agent build with SHA-256 `sha256` under release number `release`: t of
/// the authorities' shares sign a [`threshold::BuildApproval`], whose entry (hex) is added
/// to [`approvals_path`] (once; an approved build is not approved again) and returned.
/// Agents started from then on are configured with it; running ones learn it as a flooded
/// trust entry (`POST /trust-entry`).
pub fn approve_build(
    dir: &LabDir,
    sha256: [u8; 32],
    release: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, AuthorityError> {
    let p = approvals_path(dir);
    let have = approvals(dir);
    let approves = |h: &String| {
        hex::decode(h)
            .ok()
            .and_then(|b| lightcone_core::trust::log::Entry::decode(&b).ok())
            .is_some_and(|e| {
                e.kind == lightcone_core::trust::log::EntryKind::BuildApproval
                    && e.body.get(..32) == Some(&sha256[..])
            })
    };
    if let Some(e) = have.iter().find(|e| approves(e)) {
        return Ok(e.clone());
    }
    let r = record(dir)?;
    let (group, shares) = group_and_shares(dir, usize::from(r.t))?;
    let signers: Vec<&Share> = shares.iter().collect();
    let a = threshold::BuildApproval { sha256, release };
    let sig = threshold::sign(&group, &signers, &a.message(), rng)?;
    let entry = hex::encode(a.entry(&sig).encode());
    let mut text = have.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&entry);
    text.push('\n');
    write_private(&p, text.as_bytes()).map_err(io(&p))?;
    Ok(entry)
}

/// [`approve_build`] of the file at `path` (hashed here); its SHA-256.
pub fn approve_binary(
    dir: &LabDir,
    path: &std::path::Path,
    release: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<[u8; 32], AuthorityError> {
    let sha = crate::state::file_digest(path).map_err(io(path))?;
    approve_build(dir, sha, release, rng)?;
    Ok(sha)
}

/// The last order serial the lab signed (0: none, or an unreadable file).
pub fn last_serial(dir: &LabDir) -> u64 {
    std::fs::read_to_string(serial_path(dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The next order serial: one above the last signed, recorded before it is used.
pub fn next_serial(dir: &LabDir) -> Result<u64, AuthorityError> {
    let p = serial_path(dir);
    let last = match std::fs::read_to_string(&p) {
        Ok(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|e| AuthorityError::Corrupt {
                path: p.display().to_string(),
                why: e.to_string(),
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(&p)(e)),
    };
    let next = last + 1;
    write_private(&p, next.to_string().as_bytes()).map_err(io(&p))?;
    Ok(next)
}

/// Keeps the bytes of the last dark (or undark) order signed (for `--replay-last`).
pub fn remember_order(dir: &LabDir, dark: bool, bytes: &[u8]) -> Result<(), AuthorityError> {
    let p = last_order_path(dir, dark);
    write_private(&p, hex::encode(bytes).as_bytes()).map_err(io(&p))
}

/// The bytes of the last dark (or undark) order signed, if any.
pub fn last_order(dir: &LabDir, dark: bool) -> Option<Vec<u8>> {
    let t = std::fs::read_to_string(last_order_path(dir, dark)).ok()?;
    hex::decode(t.trim()).ok()
}

/// A scope an order can name, resolved against the lab's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// What the user called it.
    pub name: String,
    /// `node`, `cell` or `layer`.
    pub kind: &'static str,
    pub dest: Dest,
    /// The plan's nodes inside it, in plan order.
    pub nodes: Vec<usize>,
}

fn cell_name(a: &HierAddr) -> String {
    format!("l{}c{}k{}", a.layer, a.cluster, a.cell)
}

/// Resolves `name` (a node, a cell `lLcCkK`, a layer `lL`) in `plan`; an unknown name is
/// an error that lists what exists.
pub fn resolve(plan: &Plan, name: &str) -> Result<Scope, AuthorityError> {
    if let Some(i) = plan.nodes.iter().position(|n| n.name == name) {
        return Ok(Scope {
            name: name.into(),
            kind: "node",
            dest: Dest::Node(i as u32),
            nodes: vec![i],
        });
    }
    let cells: BTreeSet<(u16, u16, u16)> = plan
        .nodes
        .iter()
        .filter(|n| n.role != Role::Authority)
        .map(|n| (n.addr.layer, n.addr.cluster, n.addr.cell))
        .collect();
    let layers: BTreeSet<u16> = cells.iter().map(|c| c.0).collect();
    let inside = |f: &dyn Fn(&HierAddr) -> bool| -> Vec<usize> {
        (0..plan.nodes.len())
            .filter(|i| f(&plan.nodes[*i].addr))
            .collect()
    };
    for &(layer, cluster, cell) in &cells {
        let a = HierAddr {
            layer,
            cluster,
            cell,
            tile: 0,
        };
        if cell_name(&a) == name {
            return Ok(Scope {
                name: name.into(),
                kind: "cell",
                dest: Dest::Cell {
                    layer,
                    cluster,
                    cell,
                },
                nodes: inside(&|x| (x.layer, x.cluster, x.cell) == (layer, cluster, cell)),
            });
        }
    }
    for &layer in &layers {
        if format!("l{layer}") == name {
            return Ok(Scope {
                name: name.into(),
                kind: "layer",
                dest: Dest::Layer { layer },
                nodes: inside(&|x| x.layer == layer),
            });
        }
    }
    let shown = |v: Vec<String>| {
        const MAX: usize = 12;
        let more = v.len().saturating_sub(MAX);
        let mut s = v.into_iter().take(MAX).collect::<Vec<_>>().join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    let listed = format!(
        "nodes {}; cells {}; layers {}",
        shown(plan.nodes.iter().map(|n| n.name.clone()).collect()),
        shown(
            cells
                .iter()
                .map(|&(layer, cluster, cell)| cell_name(&HierAddr {
                    layer,
                    cluster,
                    cell,
                    tile: 0
                }))
                .collect()
        ),
        shown(layers.iter().map(|l| format!("l{l}")).collect()),
    );
    Err(AuthorityError::NoScope {
        lab: plan.lab.clone(),
        name: name.into(),
        listed,
    })
}

/// Certifies every node key of the lab at once (issue 17): t of the authorities' shares
/// (from the lab's `keys/`) sign the directory the agents are given ([`sign_directory`]).
/// Returns the signature (hex) that goes into every agent's configuration; an agent whose
/// directory differs refuses to start.
pub fn certify_directory(
    dir: &LabDir,
    plan: &Plan,
    public_keys: &[String],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, AuthorityError> {
    let r = record(dir)?;
    let (group, shares) = group_and_shares(dir, usize::from(r.t))?;
    let signers: Vec<&Share> = shares.iter().collect();
    sign_directory(plan, public_keys, &group, &signers, rng).map_err(|e| match e {
        DirectorySigning::Directory(why) => AuthorityError::Corrupt {
            path: dir.keys().display().to_string(),
            why,
        },
        DirectorySigning::Threshold(e) => e.into(),
    })
}

/// Why [`sign_directory`] failed.
#[derive(Debug)]
pub enum DirectorySigning {
    /// The plan's directory is not one (a bad public key).
    Directory(String),
    Threshold(threshold::ThresholdError),
}

/// The authorities' threshold signature (hex) over the directory of `plan` with
/// `public_keys` ([`lightcone_core::directory::Directory::certified_message`] over the peer
/// list every agent gets), by `signers` (at least t): the lab's `up` and the twin both call it.
pub fn sign_directory(
    plan: &Plan,
    public_keys: &[String],
    group: &threshold::Group,
    signers: &[&Share],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, DirectorySigning> {
    let peers = match plan.nodes.first() {
        Some(_) => {
            plan.agent_config(0, std::path::Path::new("/nonexistent"), public_keys)
                .peers
        }
        None => Vec::new(),
    };
    let directory = lightcone_core::directory::Directory::from_peers(&peers)
        .map_err(|e| DirectorySigning::Directory(format!("the lab's directory: {e}")))?;
    let sig = threshold::sign(group, signers, &directory.certified_message(), rng)
        .map_err(DirectorySigning::Threshold)?;
    Ok(hex::encode(sig))
}

/// Signs an order for `scope` with `shares` (fewer than t: refused by the signing step).
pub fn sign(
    group: &Group,
    shares: &[Share],
    serial: u64,
    scope: Dest,
    dark: bool,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Order, AuthorityError> {
    let signers: Vec<&Share> = shares.iter().collect();
    Ok(Order::sign(group, &signers, serial, scope, dark, rng)?)
}

/// An order with a signature no threshold made: signed by a key of `shares.len()` parties
/// that is not the group's (what a coalition below t can do at best). For showing that
/// agents refuse it.
pub fn forge(serial: u64, scope: Dest, dark: bool, rng: &mut (impl RngCore + CryptoRng)) -> Order {
    use ed25519_dalek::Signer;
    let k = ed25519_dalek::SigningKey::generate(rng);
    let m = Order::message(serial, scope, dark).unwrap_or_default();
    Order {
        serial,
        scope,
        dark,
        sig: k.sign(&m).to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn lab(yaml: &str) -> (tempfile::TempDir, LabDir, Plan) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LabDir {
            lab: "k".into(),
            path: tmp.path().to_path_buf(),
        };
        std::fs::create_dir(dir.keys()).unwrap();
        let topo = crate::topology::parse_str(yaml, "t.yaml").unwrap();
        (tmp, dir, crate::plan::plan(&topo))
    }

    const TWO_CELLS: &str = "name: t\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 1, cells: 2, tiles: 3, authorities: 1 }\n";

    #[test]
    fn shares_are_private_and_t_of_them_sign_what_agents_check() {
        let (_t, dir, plan) = lab(TWO_CELLS);
        let r = generate(&dir, &plan, &mut OsRng).unwrap();
        // One authority node: the lab holds 3-of-5.
        assert_eq!((r.t, r.members.len(), r.holders), (3, 5, Holders::Lab));
        for id in &r.members {
            assert!(is_private(&share_path(&dir, *id)), "share {id} not 0600");
        }
        let (g, shares) = group_and_shares(&dir, 5).unwrap();
        assert_eq!(hex::encode(g.key.as_bytes()), r.group_key_hex);
        let scope = resolve(&plan, "l0c0k1").unwrap();
        assert_eq!(scope.kind, "cell");
        assert_eq!(scope.nodes.len(), 3);
        let s1 = next_serial(&dir).unwrap();
        let o = sign(&g, &shares[..3], s1, scope.dest, true, &mut OsRng).unwrap();
        let mut d = lightcone_core::update::dark::Darkness::default();
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            &hex::decode(&r.group_key_hex).unwrap().try_into().unwrap(),
        )
        .unwrap();
        d.set_key(key);
        let at = plan.nodes[scope.nodes[0]].addr;
        let now = lightcone_core::time::Instant::ZERO;
        assert!(d.apply(&o.encode(), 3, &at, now).unwrap().is_some());
        // Fewer than t shares: the signing step refuses; a forged signature: the agent.
        let (_, two) = group_and_shares(&dir, 2).unwrap();
        let e = sign(&g, &two, 9, scope.dest, false, &mut OsRng).unwrap_err();
        assert!(
            e.to_string().contains("only 2 signers, the threshold is 3"),
            "{e}"
        );
        let f = forge(next_serial(&dir).unwrap(), scope.dest, false, &mut OsRng);
        assert!(d.apply(&f.encode(), 3, &at, now).is_err());
        assert!(
            d.dark_since().is_some(),
            "the forged undark changed nothing"
        );
        // Serials only grow, across calls (the file); a restarted agent gets the last.
        let s3 = next_serial(&dir).unwrap();
        assert!(s3 > s1 + 1);
        assert_eq!(last_serial(&dir), s3);
        // A share others can read is refused.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(share_path(&dir, 0), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        assert!(matches!(
            group_and_shares(&dir, 3),
            Err(AuthorityError::NotPrivate { .. })
        ));
        assert!(matches!(
            group_and_shares(&dir, 6),
            Err(AuthorityError::TooManyShares { asked: 6, held: 5 })
        ));
    }

    #[test]
    fn a_build_is_approved_once_under_the_group_key_and_agents_are_configured_with_it() {
        let (_t, dir, plan) = lab(TWO_CELLS);
        assert!(approvals(&dir).is_empty());
        // No authorities' shares yet: nothing is approved, nothing is written.
        assert!(approve_build(&dir, [1; 32], 0, &mut OsRng).is_err());
        assert!(!approvals_path(&dir).exists());
        let r = generate(&dir, &plan, &mut OsRng).unwrap();
        let a = approve_build(&dir, [1; 32], 0, &mut OsRng).unwrap();
        // Approving it again returns the same entry; another build adds a line.
        assert_eq!(approve_build(&dir, [1; 32], 5, &mut OsRng).unwrap(), a);
        let b = approve_build(&dir, [2; 32], 1, &mut OsRng).unwrap();
        assert_eq!(approvals(&dir), vec![a.clone(), b]);
        // What an agent checks: the group key approves exactly these builds.
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            &hex::decode(&r.group_key_hex).unwrap().try_into().unwrap(),
        )
        .unwrap();
        let mut store = threshold::TrustStore::new(key);
        for h in approvals(&dir) {
            let e = lightcone_core::trust::log::Entry::decode(&hex::decode(h).unwrap()).unwrap();
            assert_eq!(store.apply(&e), Ok(true));
        }
        assert!(store.is_approved(&[1; 32]) && store.is_approved(&[2; 32]));
        assert!(!store.is_approved(&[3; 32]));
        assert!(is_private(&approvals_path(&dir)));
    }

    #[test]
    fn authority_nodes_hold_the_shares_when_there_are_three() {
        let (_t, dir, plan) = lab("name: t\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 1, cells: 1, tiles: 2, authorities: 4 }\n");
        let r = generate(&dir, &plan, &mut OsRng).unwrap();
        assert_eq!(r.holders, Holders::Nodes);
        assert_eq!(r.t, 3, "a majority of 4");
        for id in &r.members {
            assert_eq!(plan.nodes[*id as usize].role, Role::Authority);
        }
    }

    #[test]
    fn scopes_resolve_by_the_topologys_names_and_unknown_ones_list_what_exists() {
        let (_t, _dir, plan) = lab(TWO_CELLS);
        let n = resolve(&plan, "l0c0k0t1").unwrap();
        assert_eq!((n.kind, n.nodes.len()), ("node", 1));
        let l = resolve(&plan, "l0").unwrap();
        assert_eq!(l.kind, "layer");
        assert_eq!(l.dest, Dest::Layer { layer: 0 });
        let e = resolve(&plan, "l0c0k7").unwrap_err().to_string();
        assert!(e.contains("no node, cell or layer \"l0c0k7\""), "{e}");
        assert!(e.contains("cells l0c0k0, l0c0k1; layers l0"), "{e}");
        assert!(e.contains("nodes l0c0k0t0"), "{e}");
    }

    #[test]
    fn agents_get_the_authorities_group_key_and_the_protocol_orders_need() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::state::LabDir {
            lab: "k".into(),
            path: tmp.path().to_path_buf(),
        };
        std::fs::create_dir(dir.keys()).unwrap();
        let topo = crate::topology::parse_str(
            "name: k\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 1, cells: 2, tiles: 2 }\n",
            "k.yaml",
        )
        .unwrap();
        let plan = crate::plan::plan(&topo);
        let mut keys = crate::keys::LabKeys::generate(&dir, plan.nodes.len(), &mut OsRng).unwrap();
        // Without the authorities' key: as before (no key, the core's default version).
        let mut cfg = plan.tile_config(1, &dir.path);
        keys.configure(&mut cfg);
        assert_eq!(
            (cfg.authorities_key_hex.as_deref(), cfg.protocol_version),
            (None, None)
        );
        let rec = generate(&dir, &plan, &mut OsRng).unwrap();
        for id in &rec.members {
            assert!(crate::keys::is_private(&share_path(&dir, *id)));
        }
        keys.set_authorities(rec.group_key_hex.clone());
        keys.configure(&mut cfg);
        assert_eq!(
            cfg.authorities_key_hex.as_deref(),
            Some(rec.group_key_hex.as_str())
        );
        assert_eq!(cfg.protocol_version, Some(3));
        assert_eq!(
            cfg.operator_public_key_hex.as_deref(),
            Some(keys.operator_public_hex())
        );
        // The configuration as written and read back by an agent keeps it; an old one
        // without the field still loads.
        let json = serde_json::to_string(&cfg).unwrap();
        let back: lightcone_core::config::AgentConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.authorities_key_hex, cfg.authorities_key_hex);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("authorities_key_hex");
        let old: lightcone_core::config::AgentConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old.authorities_key_hex, None);
    }
}
