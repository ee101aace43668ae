//! The object store's workload in a lab (issue 16): an `objects` step's puts through the
//! supervisor's object API, each recorded with its outcome, time, placement and the
//! SHA-256 of each shard (computed here from the bytes written); `crash_holders` resolved
//! from that record; and every acknowledged object read back at the end, from its current
//! holders first, then from other live nodes.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lightcone_core::store::Class;

use super::super::action::{shard_hashes, Action, ObjectLoad};
use super::super::record::{Mark, ObjectPut, ObjectReadBack, ReadMiss, Recording};
use super::super::store::current_holders;
use super::{LabView, Shared};
use crate::client::Client;

/// How long one put or read may take (the agent's own timeouts are a few emulated s).
const OBJECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The answer of a put: `{"stored": ID, "holders": [tile ids by shard index]}`.
#[derive(serde::Deserialize)]
struct Stored {
    #[serde(default)]
    holders: Vec<u32>,
}

/// Starts the put session of an `objects` action (any other action starts nothing).
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    api: &Client,
    shared: &Arc<Mutex<Shared>>,
    lab: &LabView,
    class: Option<&Class>,
    seed: u64,
    t0: Instant,
    at_ns: u64,
    action: &Action,
    out: &mut Vec<JoinHandle<()>>,
) {
    let Action::ObjectsStart { nodes, objects } = action else {
        return;
    };
    let Some(class) = class.cloned() else { return };
    let (api, shared, nodes, objects) =
        (api.clone(), shared.clone(), nodes.clone(), objects.clone());
    let (names, ts) = (lab.names.clone(), lab.ts);
    out.push(std::thread::spawn(move || {
        session(
            &api, &shared, &names, ts, &class, seed, t0, at_ns, &nodes, &objects,
        )
    }));
}

#[allow(clippy::too_many_arguments)]
fn session(
    api: &Client,
    shared: &Mutex<Shared>,
    names: &[String],
    ts: f64,
    class: &Class,
    seed: u64,
    t0: Instant,
    at_ns: u64,
    nodes: &[String],
    o: &ObjectLoad,
) {
    for (i, t_ns) in o.times(at_ns).into_iter().enumerate() {
        let due = Duration::from_secs_f64(t_ns as f64 / 1e9 / ts);
        if let Some(d) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(d);
        }
        let node = &nodes[i % nodes.len()];
        let name = o.name(i as u32);
        let bytes = o.bytes(seed, i as u32);
        let hashes = shard_hashes(&bytes, class).unwrap_or_default();
        let r = api.object_put(node, &name, &bytes, OBJECT_TIMEOUT);
        let (ok, error, holders) = match r {
            Ok(raw) if raw.status == 200 => match serde_json::from_str::<Stored>(&raw.body) {
                Ok(s) if s.holders.len() == class.n as usize => (
                    true,
                    None,
                    s.holders
                        .iter()
                        .map(|id| {
                            names
                                .get(*id as usize)
                                .cloned()
                                .unwrap_or_else(|| format!("tile {id}"))
                        })
                        .collect(),
                ),
                _ => (
                    true,
                    Some(format!(
                        "acknowledged without its placement: {}",
                        raw.body.trim()
                    )),
                    Vec::new(),
                ),
            },
            Ok(raw) => (
                false,
                Some(format!("HTTP {}: {}", raw.status, raw.body.trim())),
                Vec::new(),
            ),
            Err(e) => (false, Some(e.to_string()), Vec::new()),
        };
        shared.lock().expect("shared").objects.push(ObjectPut {
            t_real_s: t0.elapsed().as_secs_f64(),
            node: node.clone(),
            object: name,
            ok,
            error,
            holders,
            k: class.k,
            n: class.n,
            shard_sha256: hashes,
        });
    }
}

/// The nodes `crash_holders` crashes: holders of `shards` shards of each named object, by
/// the placement recorded at its put (its latest acknowledged put), `except` never, without
/// repeats — and chosen to spare every other acknowledged object: each next holder is the
/// one that takes no other stripe past its n − k spare shards, then the one holding most
/// shards of the other named objects, then the one that takes fewest shards of any other
/// stripe, then the lowest shard index. If the crashes cannot spare some other object (it
/// would keep fewer than k shards), or an object was never acknowledged with a placement,
/// the fault cannot be aimed: an error, and nothing is crashed.
pub(crate) fn holders_to_crash(
    objects: &[ObjectPut],
    names: &[String],
    shards: u16,
    except: &[String],
) -> Result<Vec<String>, String> {
    use std::collections::BTreeMap;
    let mut placed: BTreeMap<&str, &ObjectPut> = BTreeMap::new();
    for p in objects.iter().filter(|p| p.ok && !p.holders.is_empty()) {
        placed.insert(p.object.as_str(), p);
    }
    // Shards of `o` on crashed nodes (`extra` counted as crashed too).
    let taken = |o: &ObjectPut, out: &[String], extra: Option<&String>| {
        o.holders
            .iter()
            .filter(|h| out.contains(h) || Some(*h) == extra)
            .count()
    };
    let spare = |o: &ObjectPut| usize::from(o.n.saturating_sub(o.k));
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let Some(p) = placed.get(name.as_str()).copied() else {
            return Err(format!("{name} has no acknowledged put with its placement"));
        };
        while taken(p, &out, None) < shards as usize {
            let best = p
                .holders
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    !out.contains(h) && !crate::experiment::expect::selected(except, h)
                })
                .min_by_key(|&(i, h)| {
                    let (mut over, mut named, mut worst) = (0usize, 0usize, 0usize);
                    for (o_name, o) in &placed {
                        if *o_name == name.as_str() || !o.holders.contains(h) {
                            continue;
                        }
                        if names.iter().any(|n| n == o_name) {
                            named += 1;
                            continue;
                        }
                        let after = taken(o, &out, Some(h));
                        over += usize::from(after > spare(o));
                        worst = worst.max(after);
                    }
                    (over, std::cmp::Reverse(named), worst, i)
                });
            match best {
                Some((_, h)) => out.push(h.clone()),
                None => {
                    return Err(format!(
                        "{name}: only {} of its holders may be crashed (the rest are excepted), not {shards}",
                        taken(p, &out, None)
                    ))
                }
            }
        }
    }
    for (o_name, o) in &placed {
        let t = taken(o, &out, None);
        if !names.iter().any(|n| n == o_name) && t > spare(o) {
            return Err(format!(
                "crashing {shards} holders of each of {} would also take {t} of {o_name}'s {} shards \
                 (it would keep {} < k = {}): the fault cannot spare the other objects",
                names.join(" "),
                o.n,
                usize::from(o.n).saturating_sub(t),
                o.k
            ));
        }
    }
    Ok(out)
}

/// Reads every acknowledged object back ([`read_order`]: its current holders by the
/// run's final polls, then other running nodes; the first that serves it ends the tries),
/// and compares the bytes with those written.
pub(super) fn read_back(
    api: &Client,
    shared: &Mutex<Shared>,
    marks: &[Mark],
    running: &[String],
    loads: &[(u64, ObjectLoad)],
    seed: u64,
) -> Vec<ObjectReadBack> {
    let (puts, holders) = {
        let sh = shared.lock().expect("shared");
        let rec = Recording {
            polls: sh.polls.clone(),
            marks: marks.to_vec(),
            objects: sh.objects.clone(),
            ..Default::default()
        };
        (sh.objects.clone(), current_holders(&rec))
    };
    let mut out = Vec::new();
    for p in puts.iter().filter(|p| p.ok) {
        let Some(bytes) = expected_bytes(loads, &p.object, seed) else {
            continue;
        };
        let now = holders.get(&p.object).map(Vec::as_slice).unwrap_or(&[]);
        let order = read_order(now, running);
        if order.is_empty() {
            break;
        }
        out.push(read_tries(
            &p.object,
            &order,
            |node| match api.object_get_bytes(node, &p.object, OBJECT_TIMEOUT) {
                Ok((200, b)) => Ok(b),
                Ok((s, b)) => Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&b).trim())),
                Err(e) => Err(e.to_string()),
            },
            &bytes,
        ));
    }
    out
}

/// Current holders tried at most, then other running nodes at most (each try may wait
/// [`OBJECT_TIMEOUT`] in a failing lab).
pub(crate) const READ_TRIES_HOLDERS: usize = 3;
pub(crate) const READ_TRIES_OTHERS: usize = 2;

/// Who reads an object back, in order: its current holders that are running (`holders`:
/// the nodes holding a valid shard of it now, by the run's final state, in the order
/// given), at most [`READ_TRIES_HOLDERS`]; then other running nodes (which must find its
/// metadata themselves), at most [`READ_TRIES_OTHERS`].
pub(crate) fn read_order(holders: &[String], running: &[String]) -> Vec<String> {
    let mut order: Vec<String> = holders
        .iter()
        .filter(|h| running.contains(h))
        .take(READ_TRIES_HOLDERS)
        .cloned()
        .collect();
    let others: Vec<String> = running
        .iter()
        .filter(|n| !holders.contains(n))
        .take(READ_TRIES_OTHERS)
        .cloned()
        .collect();
    order.extend(others);
    order
}

/// Tries `order` in turn with `get` until one returns the bytes written.
pub(crate) fn read_tries(
    object: &str,
    order: &[String],
    mut get: impl FnMut(&str) -> Result<Vec<u8>, String>,
    written: &[u8],
) -> ObjectReadBack {
    let mut misses = Vec::new();
    for node in order {
        let error = match get(node) {
            Ok(b) if b == written => {
                return ObjectReadBack {
                    object: object.into(),
                    node: node.clone(),
                    ok: true,
                    error: None,
                    misses,
                }
            }
            Ok(b) => format!(
                "{} bytes that differ from the {} written",
                b.len(),
                written.len()
            ),
            Err(e) => e,
        };
        misses.push(ReadMiss {
            node: node.clone(),
            error,
        });
    }
    let last = misses.pop();
    ObjectReadBack {
        object: object.into(),
        node: last.as_ref().map(|m| m.node.clone()).unwrap_or_default(),
        ok: false,
        error: Some(last.map_or_else(|| "no running node to read from".into(), |m| m.error)),
        misses,
    }
}

/// The bytes written under `object` by one of the steps (`PREFIX-NNNN`).
pub(crate) fn expected_bytes(
    loads: &[(u64, ObjectLoad)],
    object: &str,
    seed: u64,
) -> Option<Vec<u8>> {
    loads.iter().find_map(|(_, o)| {
        let i: u32 = object
            .strip_prefix(o.prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (i < o.count).then(|| o.bytes(seed, i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(o: &str, holders: &[&str]) -> ObjectPut {
        ObjectPut {
            t_real_s: 0.0,
            node: "a".into(),
            object: o.into(),
            ok: true,
            error: None,
            holders: holders.iter().map(|s| s.to_string()).collect(),
            k: 1,
            n: 3,
            shard_sha256: vec![],
        }
    }

    #[test]
    fn crash_holders_aims_at_the_recorded_placement() {
        let h = [
            put("o-0000", &["a", "b", "c"]),
            put("o-0001", &["c", "d", "e"]),
        ];
        // c holds a shard of both named stripes: crashed first, so three crashes do.
        let v = holders_to_crash(&h, &["o-0000".into(), "o-0001".into()], 2, &[]).unwrap();
        assert_eq!(v, ["c", "a", "d"]);
        let e = holders_to_crash(&h, &["o-0002".into()], 2, &[]).unwrap_err();
        assert!(e.contains("o-0002 has no acknowledged put"), "{e}");
        let h = [
            put("o-0000", &["a", "b", "c"]),
            put("o-0002", &["e", "b", "f"]),
        ];
        let v = holders_to_crash(&h, &["o-0000".into(), "o-0002".into()], 2, &[]).unwrap();
        assert_eq!(v, ["b", "a", "e"]);
        // Excepted holders are skipped; too few left is an error.
        let v = holders_to_crash(&h, &["o-0000".into()], 2, &["a".into()]).unwrap();
        assert_eq!(v, ["c", "b"]);
        let e = holders_to_crash(&h, &["o-0000".into()], 3, &["a".into()]).unwrap_err();
        assert!(e.contains("only 2 of its holders"), "{e}");
    }

    #[test]
    fn crash_holders_spares_the_objects_not_named_or_refuses() {
        let kn = |mut p: ObjectPut| {
            (p.k, p.n) = (2, 3);
            p
        };
        // o-0001 may lose one shard of three. Crashing o-0000's first two holders (a, b)
        // would take two of o-0001's and lose it too: c and one of a, b are crashed.
        let h = [
            kn(put("o-0000", &["a", "b", "c"])),
            kn(put("o-0001", &["a", "b", "d"])),
        ];
        let v = holders_to_crash(&h, &["o-0000".into()], 2, &[]).unwrap();
        assert_eq!(v, ["c", "a"]);
        // The same placement for both: any two holders of o-0000 overload o-0001.
        let h = [
            kn(put("o-0000", &["a", "b", "c"])),
            kn(put("o-0001", &["c", "b", "a"])),
        ];
        let e = holders_to_crash(&h, &["o-0000".into()], 2, &[]).unwrap_err();
        assert!(
            e.contains("would also take 2 of o-0001's 3 shards (it would keep 1 < k = 2)"),
            "{e}"
        );
        // Named, it is meant to be lost: allowed.
        let v = holders_to_crash(&h, &["o-0000".into(), "o-0001".into()], 2, &[]).unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn the_read_back_asks_current_holders_then_other_live_nodes() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let running = v(&["a", "b", "c", "d", "e", "f", "g"]);
        // Holders not running are skipped; three holders at most, then two others.
        let order = read_order(&v(&["x", "d", "b", "c", "e"]), &running);
        assert_eq!(order, v(&["d", "b", "c", "a", "f"]));
        // No current holder: other live nodes only.
        assert_eq!(read_order(&[], &running[..1]), v(&["a"]));
        assert!(read_order(&[], &[]).is_empty());
        // The first try that returns the bytes written ends the tries.
        let order = v(&["d", "b", "a"]);
        let mut asked = Vec::new();
        let r = read_tries(
            "o",
            &order,
            |n| {
                asked.push(n.to_string());
                match n {
                    "d" => Err("HTTP 404: unknown object".into()),
                    "b" => Ok(b"other".to_vec()),
                    _ => Ok(b"bytes".to_vec()),
                }
            },
            b"bytes",
        );
        assert_eq!(asked, order);
        assert!(r.ok && r.node == "a" && r.error.is_none());
        assert_eq!(
            r.misses,
            [
                ReadMiss {
                    node: "d".into(),
                    error: "HTTP 404: unknown object".into()
                },
                ReadMiss {
                    node: "b".into(),
                    error: "5 bytes that differ from the 5 written".into()
                },
            ]
        );
        // Every try fails: the last is the answer, the others are misses.
        let r = read_tries("o", &order[..2], |_| Err("HTTP 503".into()), b"bytes");
        assert!(!r.ok && r.node == "b" && r.error.as_deref() == Some("HTTP 503"));
        assert_eq!(r.misses.len(), 1);
        let r = read_tries("o", &[], |_| Ok(vec![]), b"bytes");
        assert!(!r.ok && r.error.as_deref() == Some("no running node to read from"));
    }

    #[test]
    fn the_bytes_written_are_found_again_by_name() {
        let o = ObjectLoad {
            prefix: "obj".into(),
            count: 3,
            interval_ns: 1,
            size_bytes: 100,
            until_ns: 10,
        };
        let loads = [(0, o.clone())];
        assert_eq!(expected_bytes(&loads, "obj-0002", 7), Some(o.bytes(7, 2)));
        assert_ne!(o.bytes(7, 2), o.bytes(8, 2));
        assert_eq!(expected_bytes(&loads, "obj-0003", 7), None);
        assert_eq!(expected_bytes(&loads, "other-0001", 7), None);
    }
}
