//! The netem engine's netlink paths against the running kernel, in a throwaway network
//! namespace (a thread that `unshare`s one; it disappears with the thread, so nothing can be
//! left behind). Needs root; skipped otherwise.
//!
//! Whatever the kernel: `kernel_has_netem` must agree with what `apply` does, `remove` is
//! idempotent and leaves a non-netem root alone, `stats` tells netem from other qdiscs. On a
//! kernel with netem (the VM of tests/vm/netem-vm.sh, a user's host) the full cycle
//! apply → stats → re-apply → remove runs; on one without (our CI host) `apply` must fail
//! with `NotSupported` and change nothing.

use lightcone::link::netem::{self, NetemError};
use lightcone_link::model::{LinkModel, LossModel};

fn in_throwaway_netns<T: Send + 'static>(
    f: impl FnOnce(rtnetlink::Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return None;
    }
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    });
    Some(t.join().expect("test thread"))
}

const LO: u32 = 1;

fn model() -> LinkModel {
    LinkModel {
        delay_ns: 20_000_000,
        jitter_ns: 2_000_000,
        loss: LossModel::Random {
            probability: 0.01,
            correlation: 0.0,
        },
        seed: 5,
        ..LinkModel::default()
    }
}

#[test]
fn availability_agrees_with_apply() {
    let availability = netem::kernel_has_netem();
    eprintln!("{availability}");
    assert!(!availability.why().is_empty(), "availability must say why");
    let available = availability.is_available();
    let result = in_throwaway_netns(move |h| {
        Box::pin(async move {
            // Nothing of ours on lo yet: remove is a no-op, stats says "not netem".
            netem::remove(&h, LO)
                .await
                .expect("remove without netem is Ok");
            assert!(matches!(
                netem::stats(&h, LO).await,
                Err(NetemError::NotNetem(LO))
            ));
            let applied = netem::apply(&h, LO, &model(), 1.0).await;
            if available {
                applied.expect("netem available but apply failed");
                let s = netem::stats(&h, LO).await.expect("stats of our qdisc");
                assert_eq!(s.queue_packets, 0);
                // Replace, not add: a second apply with another model succeeds.
                let slower = LinkModel {
                    delay_ns: 40_000_000,
                    ..model()
                };
                netem::apply(&h, LO, &slower, 1.0).await.expect("re-apply");
                netem::remove(&h, LO).await.expect("remove");
                netem::remove(&h, LO).await.expect("remove twice");
                assert!(matches!(
                    netem::stats(&h, LO).await,
                    Err(NetemError::NotNetem(LO))
                ));
            } else {
                match applied {
                    Err(NetemError::NotSupported { ifindex, .. }) => assert_eq!(ifindex, LO),
                    other => panic!("no netem here, yet apply gave {other:?}"),
                }
                // The failed replace changed nothing.
                assert!(matches!(
                    netem::stats(&h, LO).await,
                    Err(NetemError::NotNetem(LO))
                ));
            }
        })
    });
    if result.is_none() {
        eprintln!("availability_agrees_with_apply: skipped (not root)");
    }
}

#[test]
fn apply_to_a_missing_interface_is_a_netlink_error() {
    in_throwaway_netns(|h| {
        Box::pin(async move {
            let err = netem::apply(&h, 4242, &model(), 1.0).await.unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
            // remove of a missing interface is Ok: teardown is idempotent.
            netem::remove(&h, 4242)
                .await
                .expect("remove on missing ifindex");
        })
    });
}

/// A rated link is a tree (tbf → prio → a netem per band, `netem_prio.rs`). Where the kernel
/// has all of it, apply → both bands' counters → re-apply in place → remove; where it lacks
/// a part (this CI host has tbf but neither sch_prio nor sch_netem), `apply` fails with
/// `NotSupported` naming the step, and takes down the half-built tree: the root is no
/// longer the tbf it created first.
#[test]
fn a_rated_link_gets_the_whole_tree_or_nothing() {
    let rated = LinkModel {
        rate_bps: Some(200_000_000),
        ..model()
    };
    let available = netem::kernel_has_netem().is_available();
    in_throwaway_netns(move |h| {
        Box::pin(async move {
            let applied = netem::apply(&h, LO, &rated, 1.0).await;
            match applied {
                Ok(()) => {
                    assert!(available, "apply of the tree worked without netem");
                    netem::stats(&h, LO)
                        .await
                        .expect("the tree's root counters");
                    netem::class_a_stats(&h, LO)
                        .await
                        .expect("the Class-A band's counters");
                    let slower = LinkModel {
                        rate_bps: Some(10_000_000),
                        ..rated.clone()
                    };
                    netem::apply(&h, LO, &slower, 1.0).await.expect("in place");
                    netem::remove(&h, LO).await.expect("remove");
                }
                Err(NetemError::NotSupported { ifindex, message }) => {
                    assert_eq!(ifindex, LO);
                    assert!(
                        message.starts_with("add prio") || message.starts_with("replace"),
                        "{message}"
                    );
                }
                Err(other) => panic!("apply of a rated link: {other}"),
            }
            // Nothing of ours is left either way.
            assert!(matches!(
                netem::stats(&h, LO).await,
                Err(NetemError::NotNetem(LO))
            ));
            assert!(matches!(
                netem::class_a_stats(&h, LO).await,
                Err(NetemError::NotNetem(LO))
            ));
        })
    });
}

#[test]
fn a_negative_overhead_on_a_rated_link_is_refused_before_anything_changes() {
    in_throwaway_netns(|h| {
        Box::pin(async move {
            let m = LinkModel {
                rate_bps: Some(1_000_000),
                packet_overhead_bytes: -10,
                ..model()
            };
            let err = netem::apply(&h, LO, &m, 1.0).await.unwrap_err();
            assert!(matches!(err, NetemError::NegativeOverhead(-10)), "{err}");
            assert!(matches!(
                netem::stats(&h, LO).await,
                Err(NetemError::NotNetem(LO))
            ));
        })
    });
}
