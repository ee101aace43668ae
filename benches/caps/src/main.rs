//! Mint, attenuate and verify time per token (median of many) and the token's size, for
//! the two capability formats considered for the agents' control API (issue 17, item 3):
//! biscuit-auth (Ed25519 public-key chain, Datalog checks) and macaroons (HMAC-SHA256
//! chain, the `macaroon` crate over libsodium). Both tokens carry the same restrictions:
//! operation kv-write, key prefix "app/", node 3, an expiry; attenuation adds one more
//! (key prefix "app/users/"); verification checks them against one request.

use std::time::{Duration, Instant, SystemTime};

use biscuit_auth::macros::{authorizer, biscuit, block};
use biscuit_auth::{Biscuit, KeyPair};

const RUNS: usize = 2001;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let r = f();
        times.push(t0.elapsed());
        last = Some(r);
    }
    (median(times), last.expect("RUNS > 0"))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let expiry = SystemTime::now() + Duration::from_secs(3600);

    // biscuit-auth
    let root = KeyPair::new();
    let (mint, tok) = time(|| {
        biscuit!(
            r#"check if operation("kv-write");
               check if key($k), $k.starts_with("app/");
               check if node(3);
               check if time($t), $t <= {expiry};"#,
            expiry = expiry
        )
        .build(&root)
        .expect("mint")
        .to_base64()
        .expect("encode")
    });
    let (att, tok2) = time(|| {
        Biscuit::from_base64(&tok, root.public())
            .expect("parse")
            .append(block!(r#"check if key($k), $k.starts_with("app/users/");"#))
            .expect("append")
            .to_base64()
            .expect("encode")
    });
    let (verify, ok) = time(|| {
        let b = Biscuit::from_base64(&tok2, root.public()).expect("parse");
        let now = SystemTime::now();
        let mut a = authorizer!(
            r#"time({now}); operation("kv-write"); key("app/users/42"); node(3); allow if true;"#
        )
        .build(&b)
        .expect("authorizer");
        a.authorize().is_ok()
    });
    assert!(ok, "biscuit refused a valid request");
    println!(
        "biscuit-auth 6.0.0: mint {:.1} us, attenuate {:.1} us, verify {:.1} us (median of {RUNS}); token {} B base64, attenuated {} B",
        us(mint),
        us(att),
        us(verify),
        tok.len(),
        tok2.len()
    );

    // macaroon
    macaroon::initialize().expect("libsodium");
    let key = macaroon::MacaroonKey::generate(b"operator root secret of the lab");
    let exp_s = expiry
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (mmint, mtok) = time(|| {
        let mut m = macaroon::Macaroon::create(Some("lab".into()), &key, "token-1".into())
            .expect("create");
        m.add_first_party_caveat("op = kv-write".into());
        m.add_first_party_caveat("key-prefix = app/".into());
        m.add_first_party_caveat("node = 3".into());
        m.add_first_party_caveat(format!("expires = {exp_s}").into());
        m.serialize(macaroon::Format::V2).expect("serialize")
    });
    let (matt, mtok2) = time(|| {
        let mut m = macaroon::Macaroon::deserialize(&mtok).expect("parse");
        m.add_first_party_caveat("key-prefix = app/users/".into());
        m.serialize(macaroon::Format::V2).expect("serialize")
    });
    fn general(c: &macaroon::ByteString) -> bool {
        let s = String::from_utf8_lossy(&c.0);
        if let Some(p) = s.strip_prefix("key-prefix = ") {
            return "app/users/42".starts_with(p);
        }
        if let Some(e) = s.strip_prefix("expires = ") {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(u64::MAX);
            return e.parse::<u64>().is_ok_and(|e| now <= e);
        }
        false
    }
    let (mverify, mok) = time(|| {
        let m = macaroon::Macaroon::deserialize(&mtok2).expect("parse");
        let mut v = macaroon::Verifier::default();
        v.satisfy_exact("op = kv-write".into());
        v.satisfy_exact("node = 3".into());
        v.satisfy_general(general);
        v.verify(&m, &key, Vec::new()).is_ok()
    });
    assert!(mok, "macaroon refused a valid request");
    println!(
        "macaroon 0.3.0: mint {:.1} us, attenuate {:.1} us, verify {:.1} us (median of {RUNS}); token {} B base64, attenuated {} B",
        us(mmint),
        us(matt),
        us(mverify),
        mtok.len(),
        mtok2.len()
    );
}
