//! Golden bytes: `lightcone::link::netem::encode_options` against what iproute2's `tc` sends.
//!
//! Each `tests/golden/netem/NAME.hex` holds the TCA_OPTIONS payload `tc` sent for the command
//! in its header (captured with `tests/golden/netem/capture.sh`). We build the same link as a
//! `LinkModel` and require identical bytes — including the 8 KiB delay-distribution tables,
//! which we compute rather than read from iproute2's `.dist` files.
//!
//! The one documented difference: our encoder appends `TCA_NETEM_PRNG_SEED` (the link's seed;
//! iproute2 6.1's `tc` has no `seed` option). The test checks that attribute is the last one,
//! carries `model.seed`, and strips it before comparing.

use std::path::PathBuf;

use lightcone::link::netem::{encode_options, prio, replace_request};
use lightcone_link::model::{Chance, DelayDistribution, LinkModel, LossModel};

const TCA_NETEM_PRNG_SEED: u16 = 14;
const MS: u64 = 1_000_000;

fn golden(name: &str) -> (String, Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/netem")
        .join(format!("{name}.hex"));
    read_hex(path)
}

fn read_hex(path: PathBuf) -> (String, Vec<u8>) {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("# command: "))
        .expect("golden file names its command")
        .to_string();
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    (command, bytes)
}

/// Splits off the trailing PRNG_SEED attribute, checking it carries `seed`.
fn strip_seed(mut opts: Vec<u8>, seed: u64) -> Vec<u8> {
    assert!(opts.len() >= 24 + 12);
    let at = opts.len() - 12;
    assert_eq!(
        u16::from_ne_bytes([opts[at], opts[at + 1]]),
        12,
        "seed attr length"
    );
    assert_eq!(
        u16::from_ne_bytes([opts[at + 2], opts[at + 3]]),
        TCA_NETEM_PRNG_SEED
    );
    assert_eq!(u64::from_ne_bytes(opts[at + 4..].try_into().unwrap()), seed);
    opts.truncate(at);
    opts
}

fn check(name: &str, model: LinkModel) {
    let (command, want) = golden(name);
    let got = strip_seed(encode_options(&model, 1.0).unwrap(), model.seed);
    check_whole_request(name, &command, got.clone());
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{name}: encoder differs from `{command}`: lengths {} vs {}, first difference at \
             byte {first:?}\n ours: {}\n tc:   {}",
            got.len(),
            want.len(),
            hex_head(&got),
            hex_head(&want)
        );
    }
}

/// The whole request (framing, flags, tcmsg, TCA_KIND, TCA_OPTIONS) as `tc` sent it, with
/// nlmsg_seq/pid zeroed on both sides and our options minus the seed attribute.
fn check_whole_request(name: &str, command: &str, options: Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/netem")
        .join(format!("{name}.msg.hex"));
    let (_, want) = read_hex(path);
    // struct tcmsg starts after the 16-byte nlmsghdr: family, 3 pad, ifindex (i32), ...
    let ifindex = u32::from_ne_bytes(want[20..24].try_into().unwrap());
    let mut req = replace_request(ifindex, options);
    req.header.sequence_number = 0;
    req.header.port_number = 0;
    req.finalize();
    let mut got = vec![0u8; req.buffer_len()];
    req.serialize(&mut got);
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{name}: request differs from `{command}`: lengths {} vs {}, first difference at \
             byte {first:?}\n ours: {}\n tc:   {}",
            got.len(),
            want.len(),
            hex_head(&got),
            hex_head(&want)
        );
    }
}

fn hex_head(b: &[u8]) -> String {
    b.iter().take(96).map(|x| format!("{x:02x}")).collect()
}

fn chance(probability: f64, correlation: f64) -> Chance {
    Chance {
        probability,
        correlation,
    }
}

#[test]
fn basic_delay_jitter_loss() {
    // delay 50ms 5ms loss 1%
    check(
        "basic",
        LinkModel {
            delay_ns: 50 * MS,
            jitter_ns: 5 * MS,
            loss: LossModel::Random {
                probability: 0.01,
                correlation: 0.0,
            },
            queue_limit_packets: Some(1000),
            seed: 7,
            ..LinkModel::default()
        },
    );
}

#[test]
fn full_with_normal_table() {
    // delay 20ms 2ms 25% distribution normal loss 1% 25% duplicate 0.5% corrupt 0.1%
    // reorder 25% 50% gap 5 rate 100mbit limit 1000
    check(
        "full_normal",
        LinkModel {
            delay_ns: 20 * MS,
            jitter_ns: 2 * MS,
            jitter_correlation: 0.25,
            distribution: DelayDistribution::Normal,
            loss: LossModel::Random {
                probability: 0.01,
                correlation: 0.25,
            },
            duplicate: chance(0.005, 0.0),
            corrupt: chance(0.001, 0.0),
            reorder: chance(0.25, 0.5),
            reorder_gap: 5,
            rate_bps: Some(100_000_000),
            queue_limit_packets: Some(1000),
            seed: 1,
            ..LinkModel::default()
        },
    );
}

#[test]
fn gilbert_elliott_with_pareto_table() {
    // delay 100ms 10ms distribution pareto loss gemodel 1% 10% 70% 0.1% limit 5000
    check(
        "ge_pareto",
        LinkModel {
            delay_ns: 100 * MS,
            jitter_ns: 10 * MS,
            distribution: DelayDistribution::Pareto,
            loss: LossModel::GilbertElliott {
                p: 0.01,
                r: 0.10,
                loss_bad: 0.70,
                loss_good: 0.001,
            },
            queue_limit_packets: Some(5000),
            seed: u64::MAX,
            ..LinkModel::default()
        },
    );
}

#[test]
fn long_delay_rate64_with_paretonormal_table() {
    // delay 10s 1s 10% distribution paretonormal rate 40gbit 20 limit 100000
    check(
        "long_paretonormal",
        LinkModel {
            delay_ns: 10_000 * MS,
            jitter_ns: 1_000 * MS,
            jitter_correlation: 0.10,
            distribution: DelayDistribution::Paretonormal,
            rate_bps: Some(40_000_000_000),
            packet_overhead_bytes: 20,
            queue_limit_packets: Some(100_000),
            seed: 0,
            ..LinkModel::default()
        },
    );
}

#[test]
fn correlated_random_loss_only() {
    // loss random 2% 10% limit 200
    check(
        "loss_only",
        LinkModel {
            loss: LossModel::Random {
                probability: 0.02,
                correlation: 0.10,
            },
            queue_limit_packets: Some(200),
            seed: 42,
            ..LinkModel::default()
        },
    );
}

#[test]
fn duplicate_corrupt_correlations_negative_overhead() {
    // delay 1ms duplicate 3% 20% corrupt 2% 30% rate 1500kbit -10
    check(
        "duplicate_corrupt_corr",
        LinkModel {
            delay_ns: MS,
            duplicate: chance(0.03, 0.20),
            corrupt: chance(0.02, 0.30),
            rate_bps: Some(1_500_000),
            packet_overhead_bytes: -10,
            queue_limit_packets: Some(1000),
            seed: 3,
            ..LinkModel::default()
        },
    );
}

#[test]
fn time_scale_maps_emulated_to_the_same_bytes() {
    // 50 s of emulated delay at time_scale 1000 is tc's "delay 50ms 5ms".
    let model = LinkModel {
        delay_ns: 50_000 * MS,
        jitter_ns: 5_000 * MS,
        loss: LossModel::Random {
            probability: 0.01,
            correlation: 0.0,
        },
        queue_limit_packets: Some(1000),
        seed: 7,
        ..LinkModel::default()
    };
    let (_, want) = golden("basic");
    let got = strip_seed(encode_options(&model, 1000.0).unwrap(), model.seed);
    assert_eq!(got, want);
}

#[test]
fn a_changed_field_changes_the_bytes() {
    // Guards against a comparison that cannot fail: perturb one field of a golden config.
    let (_, want) = golden("basic");
    let model = LinkModel {
        delay_ns: 50 * MS,
        jitter_ns: 5 * MS,
        loss: LossModel::Random {
            probability: 0.011,
            correlation: 0.0,
        },
        queue_limit_packets: Some(1000),
        ..LinkModel::default()
    };
    let got = strip_seed(encode_options(&model, 1.0).unwrap(), 0);
    assert_ne!(got, want);
}

// --- The rated link's tree (tbf → prio → netem bands, `netem_prio.rs`) -------------------

/// Serialises a request with nlmsg_seq/pid zeroed, as the golden files hold them.
fn bytes_of(
    mut req: netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
) -> Vec<u8> {
    req.header.sequence_number = 0;
    req.header.port_number = 0;
    req.finalize();
    let mut got = vec![0u8; req.buffer_len()];
    req.serialize(&mut got);
    got
}

fn golden_msg(name: &str) -> (String, Vec<u8>) {
    read_hex(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/netem")
            .join(format!("{name}.msg.hex")),
    )
}

fn same(name: &str, command: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{name}: request differs from `{command}`: lengths {} vs {}, first difference at \
             byte {first:?}\n ours: {}\n tc:   {}",
            got.len(),
            want.len(),
            hex_head(got),
            hex_head(want)
        );
    }
}

#[test]
fn prio_request_is_tcs() {
    let (command, want) = golden_msg("tree_prio");
    let ifindex = u32::from_ne_bytes(want[20..24].try_into().unwrap());
    let got = bytes_of(prio::qdisc_request(
        ifindex,
        prio::TBF_CLASS,
        prio::PRIO,
        "prio",
        prio::prio_options(),
    ));
    same("tree_prio", &command, &got, &want);
}

#[test]
fn band_queue_request_is_tcs() {
    let (command, want) = golden_msg("tree_pfifo");
    let ifindex = u32::from_ne_bytes(want[20..24].try_into().unwrap());
    let got = bytes_of(prio::qdisc_request(
        ifindex,
        prio::CLASS_A_BAND,
        prio::CLASS_A_QUEUE,
        "pfifo",
        prio::pfifo_options(prio::BAND_LIMIT_PACKETS),
    ));
    same("tree_pfifo", &command, &got, &want);
}

#[test]
fn class_a_filter_request_is_tcs() {
    let (command, want) = golden_msg("tree_filter");
    let ifindex = u32::from_ne_bytes(want[20..24].try_into().unwrap());
    same(
        "tree_filter",
        &command,
        &bytes_of(prio::filter_request(ifindex)),
        &want,
    );
    // Guard: another mark would be other bytes.
    assert!(command.contains("dsfield 0xc0 0xc0 flowid 20:1"));
}

/// tbf: the same request as `tc`'s except two documented differences. `tc` appends the
/// 1,024-byte TCA_TBF_RTAB; the kernel reads it only for rates of link layer "unaware", and
/// both requests say Ethernet, so we send none. And `tc` computes the bucket time (`buffer`,
/// psched ticks) in floating point with its own rounding; the kernel recomputes it from
/// TCA_TBF_BURST, which both send equal — so `buffer` must agree within 0.5 %.
#[test]
fn tbf_request_is_tcs_without_the_rate_table() {
    let (command, want) = golden_msg("tree_tbf");
    let ifindex = u32::from_ne_bytes(want[20..24].try_into().unwrap());
    // `parent 1:1 handle 10: tbf rate 200mbit burst 3028 limit 1514000`
    let netem_class = netlink_packet_route::tc::TcHandle { major: 1, minor: 1 };
    let ours = bytes_of(prio::qdisc_request(
        ifindex,
        netem_class,
        prio::TBF,
        "tbf",
        prio::tbf_options(25_000_000, prio::burst_bytes(), 0, 1_514_000),
    ));
    // nlmsghdr (16) + tcmsg (20) + TCA_KIND "tbf" (8) + TCA_OPTIONS header (4).
    let opts = 16 + 20 + 8 + 4;
    let attrs = |b: &[u8]| -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = opts;
        while off + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([b[off + 2], b[off + 3]]);
            out.push((kind, b[off + 4..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        out
    };
    // Same framing up to the options (flags, tcmsg, kind).
    same(
        "tree_tbf header",
        &command,
        &ours[4..opts - 4],
        &want[4..opts - 4],
    );
    let (mine, tcs) = (attrs(&ours), attrs(&want));
    let kinds = |a: &[(u16, Vec<u8>)]| a.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    // TCA_TBF_PARMS (1), TCA_TBF_BURST (6), and tc's TCA_TBF_RTAB (2).
    assert_eq!(kinds(&mine), vec![1, 6], "ours");
    assert_eq!(kinds(&tcs), vec![1, 6, 2], "tc's");
    assert_eq!(mine[1], tcs[1], "TCA_TBF_BURST");
    let (p, q) = (&mine[0].1, &tcs[0].1);
    assert_eq!(p.len(), 36);
    // Everything but `buffer` (bytes 28..32) as tc sent it.
    assert_eq!(p[..28], q[..28], "rate, peakrate, limit");
    assert_eq!(p[32..], q[32..], "mtu");
    let buffer = |b: &[u8]| f64::from(u32::from_ne_bytes(b[28..32].try_into().unwrap()));
    let (b_ours, b_tc) = (buffer(p), buffer(q));
    assert!(
        (b_ours - b_tc).abs() <= 0.005 * b_tc,
        "buffer {b_ours} ticks vs tc's {b_tc}"
    );
}
