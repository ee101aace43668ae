//! End-to-end tests of the wire engine in real namespaces (needs root): UDP probes between
//! two namespaces joined through a wire namespace, checked against the link model.

#[path = "wire_lab.rs"]
mod wire_lab;

use std::time::{Duration, Instant};

use lightcone::link::probe::{probe, ProbeOptions, ProbeReport};
use lightcone::link::wire::{Direction, WireEngine, WireMetrics};
use lightcone_link::model::{DelayDistribution, LinkModel, LossModel};
use wire_lab::{Lab, IP_A, IP_B};

const MS: u64 = 1_000_000;

fn delay(delay_ns: u64, seed: u64) -> LinkModel {
    LinkModel {
        delay_ns,
        seed,
        ..LinkModel::default()
    }
}

fn run(lab: &Lab, opts: &ProbeOptions) -> ProbeReport {
    let r = probe(&lab.a, IP_A, &lab.b, IP_B, opts).expect("probe");
    eprintln!("{r:?}");
    r
}

/// A few probes first so ARP is resolved before anything is measured.
fn warm_up(lab: &Lab) {
    let r = run(
        lab,
        &ProbeOptions {
            count: 5,
            interval: Duration::from_millis(1),
            wait: Duration::from_millis(100),
            ..ProbeOptions::default()
        },
    );
    assert!(r.received > 0, "no probe got through while warming up");
}

/// Two-sided binomial interval holding `level` of the mass of Bin(n, p).
fn binomial_interval(n: u64, p: f64, level: f64) -> (u64, u64) {
    // pmf by the recurrence pmf(k+1) = pmf(k) · (n−k)/(k+1) · p/(1−p), from pmf(0)
    let mut pmf = Vec::with_capacity(n as usize + 1);
    let mut v = (1.0 - p).powf(n as f64);
    for k in 0..=n {
        pmf.push(v);
        v *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
    }
    let tail = (1.0 - level) / 2.0;
    let (mut lo, mut acc) = (0usize, 0.0);
    while acc + pmf[lo] < tail {
        acc += pmf[lo];
        lo += 1;
    }
    let (mut hi, mut acc) = (n as usize, 0.0);
    while acc + pmf[hi] < tail {
        acc += pmf[hi];
        hi -= 1;
    }
    (lo as u64, hi as u64)
}

fn assert_loss_in_interval(what: &str, n: u32, loss: f64, p: f64) {
    let lost = (loss * f64::from(n)).round() as u64;
    let (lo, hi) = binomial_interval(u64::from(n), p, 0.999);
    assert!(
        (lo..=hi).contains(&lost),
        "{what}: {lost} of {n} lost, 99.9 % interval for p={p} is {lo}..={hi}"
    );
}

#[test]
fn jitter_and_loss_follow_the_model() {
    let lab = Lab::through_wire("jl");
    let registry = prometheus::Registry::new();
    let metrics = WireMetrics::register(&registry, "t").expect("metrics");
    let engine = WireEngine::start_with_metrics(1.0, Some(metrics)).expect("engine");
    let model = |seed| LinkModel {
        delay_ns: 20 * MS,
        jitter_ns: 2 * MS,
        distribution: DelayDistribution::Uniform,
        loss: LossModel::Random {
            probability: 0.01,
            correlation: 0.0,
        },
        seed,
        ..LinkModel::default()
    };
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, model(1), model(2))
        .expect("add link");
    warm_up(&lab);
    let r = run(
        &lab,
        &ProbeOptions {
            count: 1000,
            interval: Duration::from_millis(2),
            ..ProbeOptions::default()
        },
    );
    assert!(
        (r.rtt_mean_s / 0.040 - 1.0).abs() < 0.05,
        "mean RTT {} s, want 0.040 ± 5 %",
        r.rtt_mean_s
    );
    // jitter shows: uniform ±2 ms each way spreads the RTT over ±4 ms
    assert!(
        r.rtt_max_s - r.rtt_min_s > 0.004,
        "no visible jitter: {r:?}"
    );
    assert_loss_in_interval("a→b", r.sent, r.loss_a_to_b, 0.01);
    assert_loss_in_interval("b→a", r.received_at_b, r.loss_b_to_a, 0.01);

    // the engine's own counters and metrics agree with what the probe saw
    let stats = engine.stats();
    let ab = stats
        .iter()
        .find(|s| s.direction == Direction::AToB)
        .expect("a→b stats");
    assert!(ab.forwarded >= u64::from(r.received_at_b));
    assert!(ab.dropped_loss > 0);
    let mean_s = ab.delay_sum_s / ab.forwarded as f64;
    assert!(
        (mean_s / 0.020 - 1.0).abs() < 0.05,
        "engine mean delay {mean_s}"
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    assert!(
        text.contains(r#"lightcone_link_packets_total{direction="a_to_b",lab="t",link="a-b",outcome="dropped_loss"}"#),
        "{text}"
    );
    assert!(text.contains("lightcone_link_delay_seconds_bucket"));
    assert!(text.contains(
        r#"lightcone_link_configured_delay_seconds{direction="a_to_b",lab="t",link="a-b"} 0.02"#
    ));
}

#[test]
fn gilbert_elliott_bursts_have_mean_length_one_over_r() {
    let lab = Lab::through_wire("ge");
    let engine = WireEngine::start(1.0).expect("engine");
    let (p, r) = (0.05, 0.5);
    let ab = LinkModel {
        delay_ns: MS,
        loss: LossModel::GilbertElliott {
            p,
            r,
            loss_bad: 1.0,
            loss_good: 0.0,
        },
        seed: 11,
        ..LinkModel::default()
    };
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, ab, delay(MS, 12))
        .expect("add link");
    warm_up(&lab);
    let rep = run(
        &lab,
        &ProbeOptions {
            count: 20_000,
            interval: Duration::from_micros(100),
            ..ProbeOptions::default()
        },
    );
    let want = 1.0 / r;
    assert!(
        rep.loss_bursts_a_to_b > 300,
        "too few bursts to judge: {}",
        rep.loss_bursts_a_to_b
    );
    assert!(
        (rep.mean_loss_burst_a_to_b / want - 1.0).abs() < 0.10,
        "mean burst {} packets over {} bursts, want {want} ± 10 %",
        rep.mean_loss_burst_a_to_b,
        rep.loss_bursts_a_to_b
    );
}

#[test]
fn rate_limits_throughput() {
    let lab = Lab::through_wire("rt");
    let engine = WireEngine::start(1.0).expect("engine");
    let rate = 10_000_000;
    let m = |seed| LinkModel {
        delay_ns: 5 * MS,
        rate_bps: Some(rate),
        seed,
        ..LinkModel::default()
    };
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, m(1), m(2))
        .expect("add link");
    warm_up(&lab);
    let r = run(
        &lab,
        &ProbeOptions {
            count: 0,
            throughput_packets: 1500,
            throughput_payload_bytes: 1000,
            ..ProbeOptions::default()
        },
    );
    let bps = r.throughput_bps.expect("throughput measured");
    assert!(
        (bps / rate as f64 - 1.0).abs() < 0.05,
        "throughput {bps} bit/s, want {rate} ± 5 %"
    );
    assert_eq!(
        r.throughput_loss,
        Some(0.0),
        "default queue must hold the burst"
    );
}

#[test]
fn set_model_changes_the_next_packets_and_down_up_cut_and_restore() {
    let lab = Lab::through_wire("sm");
    let engine = WireEngine::start(1.0).expect("engine");
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, delay(10 * MS, 1), delay(10 * MS, 2))
        .expect("add link");
    warm_up(&lab);
    let opts = ProbeOptions {
        count: 100,
        interval: Duration::from_millis(2),
        wait: Duration::from_millis(200),
        ..ProbeOptions::default()
    };
    let before = run(&lab, &opts);
    assert!((before.rtt_p50_s - 0.020).abs() < 0.002, "{before:?}");

    engine
        .set_model("a-b", Some(delay(30 * MS, 1)), Some(delay(30 * MS, 2)))
        .expect("set model");
    let after = run(&lab, &opts);
    assert!((after.rtt_p50_s - 0.060).abs() < 0.002, "{after:?}");
    assert_eq!(after.loss, 0.0);

    engine.set_up("a-b", false).expect("down");
    let down = run(&lab, &opts);
    assert_eq!(down.loss, 1.0, "a down link must lose everything: {down:?}");
    let s = engine.stats();
    assert!(s.iter().all(|s| !s.up));
    assert!(s.iter().any(|s| s.dropped_down >= 100));

    engine.set_up("a-b", true).expect("up");
    let up = run(&lab, &opts);
    assert_eq!(up.loss, 0.0, "up must restore the link: {up:?}");
    assert!((up.rtt_p50_s - 0.060).abs() < 0.002, "{up:?}");
    assert!(engine.set_up("nope", true).is_err());
}

#[test]
fn one_au_at_time_scale_1000_is_half_a_real_second() {
    let lab = Lab::through_wire("au");
    let engine = WireEngine::start(1000.0).expect("engine");
    let au_ns = 499_000_000_000;
    let (pa, pb) = lab.ports();
    engine
        .add_link("earth-sun", pa, pb, delay(au_ns, 1), delay(au_ns, 2))
        .expect("add link");
    // ARP itself takes a real second here: resolve it before measuring
    let warm = run(
        &lab,
        &ProbeOptions {
            count: 1,
            wait: Duration::from_secs(3),
            ..ProbeOptions::default()
        },
    );
    assert_eq!(warm.received, 1);
    let r = run(
        &lab,
        &ProbeOptions {
            count: 20,
            interval: Duration::from_millis(10),
            wait: Duration::from_millis(1500),
            ..ProbeOptions::default()
        },
    );
    assert_eq!(r.received, 20);
    for (what, s) in [
        ("a→b", r.one_way_a_to_b_mean_s),
        ("b→a", r.one_way_b_to_a_mean_s),
    ] {
        assert!(
            (s - 0.499).abs() < 0.002,
            "{what} one-way delay {s} s, want 0.499 s"
        );
    }
    let st = engine.stats();
    assert!((st[0].configured_delay_s - 0.499).abs() < 1e-9);
}

/// TCP over veth uses checksum offload and GSO super-frames; the virtio-net header the
/// engine keeps with each frame must carry both across, or the stream stalls.
#[test]
fn tcp_stream_crosses_the_link_intact() {
    use std::io::{Read, Write};
    use std::net::{SocketAddrV4, TcpListener, TcpStream};

    let lab = Lab::through_wire("tcp");
    let engine = WireEngine::start(1.0).expect("engine");
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, delay(MS, 1), delay(MS, 2))
        .expect("add link");
    let listener = lab
        .b
        .run(|| TcpListener::bind(SocketAddrV4::new(IP_B, 9100)))
        .expect("enter b")
        .expect("listen");
    let client = lab
        .a
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(IP_B, 9100).into(),
                Duration::from_secs(5),
            )
        })
        .expect("enter a")
        .expect("connect");
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let mut c = client;
        c.write_all(&sent).expect("write");
    });
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = vec![0u8; data.len()];
    server.read_exact(&mut got).expect("read the whole stream");
    writer.join().expect("writer");
    assert!(got == data, "stream corrupted");
}

/// A corrupted frame must be caught by the receiver's checks: the engine completes the
/// offloaded checksum before flipping the bit. Only flips in fields nobody checks (the
/// source MAC: 48 of the ~850 bits of a probe frame) may get through.
#[test]
fn corrupted_frames_fail_the_receivers_checks() {
    let lab = Lab::through_wire("cr");
    let engine = WireEngine::start(1.0).expect("engine");
    let corrupt_all = LinkModel {
        corrupt: lightcone_link::model::Chance {
            probability: 1.0,
            correlation: 0.0,
        },
        ..delay(MS, 1)
    };
    let (pa, pb) = lab.ports();
    engine
        .add_link("a-b", pa, pb, delay(MS, 3), delay(MS, 2))
        .expect("add link");
    warm_up(&lab);
    engine
        .set_model("a-b", Some(corrupt_all), None)
        .expect("set model");
    let r = run(
        &lab,
        &ProbeOptions {
            count: 300,
            interval: Duration::from_micros(500),
            wait: Duration::from_millis(100),
            ..ProbeOptions::default()
        },
    );
    assert!(r.loss_a_to_b > 0.85, "corruption went unnoticed: {r:?}");
}

/// Closing an AF_PACKET socket waits for a network RCU grace period (12–22 ms on the
/// reference machine): an engine of 200 links (400 sockets) closed them one by one in about
/// 6 s, so `lightcone down` of a 1,000-node lab took half a minute. Closed concurrently
/// they share grace periods.
#[test]
fn an_engine_of_200_links_closes_its_400_sockets_concurrently() {
    let lab = Lab::through_wire("close");
    for how in ["drop", "stop"] {
        let engine = WireEngine::start(1.0).expect("engine");
        for i in 0..200 {
            // every link on the same two ends: sockets are what is measured, not frames
            let (pa, pb) = lab.ports();
            engine
                .add_link(&format!("l{i}"), pa, pb, delay(MS, 1), delay(MS, 2))
                .expect("add link");
        }
        let t = Instant::now();
        match how {
            "drop" => drop(engine),
            _ => {
                let closing = engine.stop();
                let stopped = t.elapsed();
                assert!(
                    stopped < Duration::from_millis(100),
                    "stop took {stopped:?}"
                );
                closing.expect("closing thread").join().expect("closing");
            }
        }
        let took = t.elapsed();
        eprintln!("{how}: 400 sockets closed in {took:?}");
        assert!(
            took < Duration::from_millis(1500),
            "{how}: closing 400 sockets took {took:?}"
        );
    }
}
