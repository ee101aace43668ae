//! Capabilities (issue 17, item 3): scoped, time-limited, attenuable tokens that every
//! state-changing request to an agent must carry, issued from the lab's operator root key.
//!
//! **Format: biscuit-auth 6** (Biscuit: a chain of Ed25519-signed blocks of Datalog;
//! <https://doc.biscuitsec.org>). Each token's blocks hold *checks* only: which operation,
//! which key prefix, which node, until when. Anyone holding a token can attenuate it
//! offline by appending a block of further checks (checks are conjunctive, so an appended
//! block can only narrow what the token allows); an agent verifies with the lab's operator
//! *public* key alone, so agents hold no secret that mints tokens. The agent supplies the
//! request's facts (`operation`, `key`, `node`, `time`) and allows the request if every
//! check of every block holds. Revocation: each block has a revocation id
//! ([`revocation_ids`]); revoking the id of a token's first block refuses that token and
//! everything attenuated from it.
//!
//! Why biscuit, measured against the alternative, macaroons (the `macaroon` 0.3 crate, an
//! HMAC-SHA256 chain over libsodium), by `cargo run --release --manifest-path
//! benches/caps/Cargo.toml` (same restrictions in both; median of 2,001; a shared, loaded
//! 2-core host):
//!
//! ```text
//! biscuit-auth 6.0.0: mint 44.0 us, attenuate 136.2 us, verify 149.1 us (median of 2001); token 388 B base64, attenuated 604 B
//! macaroon 0.3.0: mint 5.4 us, attenuate 2.8 us, verify 7.1 us (median of 2001); token 164 B base64, attenuated 196 B
//! ```
//!
//! Macaroons are ~21× cheaper to verify and ~2.4× smaller, but verifying one needs the *root secret*
//! (HMAC): every agent would hold a key that mints any token for the whole lab, so one
//! compromised tile could act as the operator. Biscuit verifies with the public key, and
//! its checks are a language (prefix tests, time comparisons) instead of strings every
//! verifier must interpret the same way. The cost — ~0.15 ms per state-changing control
//! request, a path that runs a few times a second, never per datagram — is the price of not
//! spreading the root secret. (The crate depends on `getrandom`, so it lives here and in the
//! orchestrator, never in the sans-IO core.)
//!
//! Expiry is wall-clock time (`SystemTime`, what Biscuit's `time` facts are), with
//! one-second granularity, independent of the lab's `time_scale`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{Algorithm, BlockBuilder};
use biscuit_auth::error::{FailedCheck, Format, Logic, Token};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, BiscuitBuilder, KeyPair};
use biscuit_auth::{PrivateKey, PublicKey};

/// The HTTP header a token travels in: `Authorization: Bearer <base64url token>`.
pub const HEADER: &str = "authorization";

/// Longest token an agent reads (base64 characters); a longer one is refused as malformed
/// before it is decoded. A token of four blocks is about 1 KiB.
pub const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// Most revocation ids an agent holds. A revocation beyond it is refused (nothing is
/// dropped: forgetting an id would make a revoked token good again).
pub const MAX_REVOKED: usize = 4096;

/// Longest Datalog evaluation of one token before it is refused (Biscuit's default is
/// 1 ms, which a loaded 2-core host exceeds now and then for a valid token).
pub const MAX_VERIFY_TIME: Duration = Duration::from_millis(50);

/// The state-changing operations of an agent, each a route (or routes) of its control
/// API. Reads (`GET /state`, `/metrics`, `/kv/…`, `/objects/…`, `/leases`) need none:
/// the control socket is 0600 (root only), and they change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `PUT|POST /kv/{key}`; a scope is a key prefix.
    KvWrite,
    /// `PUT|POST /objects/{id}`; a scope is an object id prefix.
    ObjectPut,
    /// `POST /task`.
    TaskSubmit,
    /// `POST /send/{node}`: application bytes over the overlay.
    Send,
    /// `POST /clock`, `POST /byzantine`: fault injection.
    Fault,
    /// `POST /quarantine/{node}`, `POST /shutdown`: operator orders.
    Order,
    /// `POST /revoke`: add revocation ids.
    Revoke,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::KvWrite,
        Op::ObjectPut,
        Op::TaskSubmit,
        Op::Send,
        Op::Fault,
        Op::Order,
        Op::Revoke,
    ];

    /// The name in tokens, on the command line and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::KvWrite => "kv-write",
            Op::ObjectPut => "object-put",
            Op::TaskSubmit => "task-submit",
            Op::Send => "send",
            Op::Fault => "fault",
            Op::Order => "order",
            Op::Revoke => "revoke",
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Op, String> {
        Op::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
                format!("unknown operation {s:?}; one of {}", all.join(", "))
            })
    }
}

/// Restrictions a token (or an attenuation block) adds. `None` adds no check of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caveats {
    pub op: Option<Op>,
    /// The key (or object id) must start with this.
    pub scope: Option<String>,
    /// Only the agent of this node id.
    pub node: Option<u32>,
    /// Not after this instant (wall clock, whole seconds).
    pub expires: Option<SystemTime>,
}

/// Why a token could not be made. Nothing was issued.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("a minted token must name its operation and its expiry")]
    Unbounded,
    #[error("the token to attenuate is not valid under this lab's operator key: {0}")]
    Parent(String),
    #[error("biscuit: {0}")]
    Biscuit(String),
}

fn biscuit_err(e: Token) -> MintError {
    MintError::Biscuit(e.to_string())
}

impl Caveats {
    /// The block of checks these caveats mean.
    fn block(&self) -> Result<BlockBuilder, MintError> {
        let mut b = BlockBuilder::new();
        if let Some(op) = self.op {
            b = b
                .code_with_params(
                    "check if operation({op});",
                    [("op".to_string(), op.as_str().into())].into(),
                    Default::default(),
                )
                .map_err(biscuit_err)?;
        }
        if let Some(scope) = &self.scope {
            b = b
                .code_with_params(
                    "check if key($k), $k.starts_with({scope});",
                    [("scope".to_string(), scope.as_str().into())].into(),
                    Default::default(),
                )
                .map_err(biscuit_err)?;
        }
        if let Some(node) = self.node {
            b = b
                .code_with_params(
                    "check if node({node});",
                    [("node".to_string(), i64::from(node).into())].into(),
                    Default::default(),
                )
                .map_err(biscuit_err)?;
        }
        if let Some(t) = self.expires {
            b = b
                .code_with_params(
                    "check if time($t), $t <= {expires};",
                    [("expires".to_string(), t.into())].into(),
                    Default::default(),
                )
                .map_err(biscuit_err)?;
        }
        Ok(b)
    }
}

/// A lab's operator root key: mints every token of the lab. Held by the supervisor (and
/// written 0600 in the lab's state dir); agents get only its public half.
pub struct OperatorKey(KeyPair);

impl OperatorKey {
    /// The key whose Ed25519 secret is `seed` (32 bytes from the OS RNG at `up`).
    pub fn from_seed(seed: &[u8; 32]) -> Result<OperatorKey, MintError> {
        let private = PrivateKey::from_bytes(seed, Algorithm::Ed25519)
            .map_err(|e| MintError::Biscuit(e.to_string()))?;
        Ok(OperatorKey(KeyPair::from(&private)))
    }

    /// The public key, hex (what agents' configurations carry).
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.public().to_bytes())
    }

    /// A new token (base64url) with these caveats; it must name an operation and an expiry.
    pub fn mint(&self, c: &Caveats) -> Result<String, MintError> {
        if c.op.is_none() || c.expires.is_none() {
            return Err(MintError::Unbounded);
        }
        BiscuitBuilder::new()
            .merge(c.block()?)
            .build(&self.0)
            .and_then(|b| b.to_base64())
            .map_err(biscuit_err)
    }
}

/// `token` (base64url) with one more block of checks: what it allows, narrowed by `c`.
/// Needs only the public key; checks the parent first (a bad parent is refused here
/// rather than at the agent).
pub fn attenuate(token: &str, root_public_hex: &str, c: &Caveats) -> Result<String, MintError> {
    let root = public_key(root_public_hex).map_err(MintError::Parent)?;
    let parent =
        Biscuit::from_base64(token.trim(), root).map_err(|e| MintError::Parent(e.to_string()))?;
    parent
        .append(c.block()?)
        .and_then(|b| b.to_base64())
        .map_err(biscuit_err)
}

/// The revocation ids (hex) of a token's blocks, first block first; revoking the first
/// refuses the token and every attenuation of it.
pub fn revocation_ids(token: &str, root_public_hex: &str) -> Result<Vec<String>, String> {
    let root = public_key(root_public_hex)?;
    let b = Biscuit::from_base64(token.trim(), root).map_err(|e| e.to_string())?;
    Ok(b.revocation_identifiers().iter().map(hex::encode).collect())
}

/// An Ed25519 public key from hex.
pub fn public_key(hex_key: &str) -> Result<PublicKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("operator key: {e}"))?;
    PublicKey::from_bytes(&bytes, Algorithm::Ed25519).map_err(|e| format!("operator key: {e}"))
}

/// What a request does, as the agent sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub op: Op,
    /// The key or object id written, if the operation has one.
    pub key: Option<&'a str>,
    pub now: SystemTime,
}

/// Why a request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no capability: {op} needs an `Authorization: Bearer <token>` header (mint one with `lightcone token mint`)")]
    Missing { op: &'static str },
    #[error("malformed capability: {0}")]
    Malformed(String),
    #[error("capability not issued by this lab's operator key (another root, or altered): {0}")]
    WrongRoot(String),
    #[error("capability expired: {0}")]
    Expired(String),
    #[error("capability does not allow {op}: {checks}")]
    OutOfScope { op: &'static str, checks: String },
    #[error("capability revoked (revocation id {0})")]
    Revoked(String),
    #[error("this agent has no operator key configured; it accepts no state-changing request")]
    NoOperatorKey,
}

impl Refusal {
    /// The `reason` label of `lightcone_capability_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing { .. } => "missing",
            Refusal::Malformed(_) => "malformed",
            Refusal::WrongRoot(_) => "wrong_root",
            Refusal::Expired(_) => "expired",
            Refusal::OutOfScope { .. } => "out_of_scope",
            Refusal::Revoked(_) => "revoked",
            Refusal::NoOperatorKey => "no_operator_key",
        }
    }

    /// Every reason label (the metric's series exist from the start, at 0).
    pub const REASONS: [&'static str; 7] = [
        "missing",
        "malformed",
        "wrong_root",
        "expired",
        "out_of_scope",
        "revoked",
        "no_operator_key",
    ];

    /// The HTTP status: 403 for a valid token that does not cover the request, 401 for
    /// every other refusal (no usable credential).
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::OutOfScope { .. } => 403,
            _ => 401,
        }
    }
}

/// Why a revocation was not recorded. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("revocation id {0:?} is not hex")]
    NotHex(String),
    #[error("the agent holds {held} revocation ids; {adding} more would pass its bound of {MAX_REVOKED}")]
    Full { held: usize, adding: usize },
}

/// An agent's check of capabilities: the operator's public key, the node it guards, and
/// the revocation ids it was told of.
pub struct Verifier {
    root: Option<PublicKey>,
    node: u32,
    revoked: Mutex<BTreeSet<Vec<u8>>>,
}

impl Verifier {
    /// `root_hex`: the operator public key from the agent's configuration (`None`: every
    /// state-changing request is refused).
    pub fn new(root_hex: Option<&str>, node: u32) -> Result<Verifier, String> {
        let root = root_hex.map(public_key).transpose()?;
        Ok(Verifier {
            root,
            node,
            revoked: Mutex::new(BTreeSet::new()),
        })
    }

    /// The token of an `Authorization` header value, checked against `req`: Ok with the
    /// token's revocation ids, or why not.
    pub fn check(&self, header: Option<&str>, req: &Request<'_>) -> Result<(), Refusal> {
        let Some(root) = self.root else {
            return Err(Refusal::NoOperatorKey);
        };
        let Some(h) = header else {
            return Err(Refusal::Missing {
                op: req.op.as_str(),
            });
        };
        let Some(token) = h.trim().strip_prefix("Bearer ") else {
            return Err(Refusal::Malformed(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        };
        let token = token.trim();
        if token.len() > MAX_TOKEN_CHARS {
            return Err(Refusal::Malformed(format!(
                "{} characters; at most {MAX_TOKEN_CHARS}",
                token.len()
            )));
        }
        let b = Biscuit::from_base64(token, root).map_err(|e| match e {
            Token::Format(
                Format::Signature(_) | Format::SealedSignature | Format::UnknownPublicKey,
            ) => Refusal::WrongRoot(e.to_string()),
            e => Refusal::Malformed(e.to_string()),
        })?;
        {
            let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(id) = b
                .revocation_identifiers()
                .into_iter()
                .find(|id| revoked.contains(id))
            {
                return Err(Refusal::Revoked(hex::encode(id)));
            }
        }
        let facts = || -> Result<AuthorizerBuilder, Token> {
            let mut a = AuthorizerBuilder::new()
                .code_with_params(
                    "operation({op}); node({node}); time({now}); allow if true;",
                    [
                        ("op".to_string(), req.op.as_str().into()),
                        ("node".to_string(), i64::from(self.node).into()),
                        ("now".to_string(), req.now.into()),
                    ]
                    .into(),
                    Default::default(),
                )?
                .set_limits(AuthorizerLimits {
                    max_time: MAX_VERIFY_TIME,
                    ..Default::default()
                });
            if let Some(k) = req.key {
                a = a.code_with_params(
                    "key({k});",
                    [("k".to_string(), k.into())].into(),
                    Default::default(),
                )?;
            }
            Ok(a)
        };
        let result = facts()
            .and_then(|a| a.build(&b))
            .and_then(|mut a| a.authorize());
        match result {
            Ok(_) => Ok(()),
            Err(Token::FailedLogic(
                Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks },
            )) => {
                let rules: Vec<String> = checks.iter().map(rule_of).collect();
                let text = rules.join("; ");
                if rules.iter().any(|r| r.contains("time(")) {
                    Err(Refusal::Expired(text))
                } else {
                    Err(Refusal::OutOfScope {
                        op: req.op.as_str(),
                        checks: text,
                    })
                }
            }
            Err(e) => Err(Refusal::Malformed(e.to_string())),
        }
    }

    /// Adds revocation ids (hex); all or none. Answers how many the agent now holds.
    pub fn revoke(&self, ids: &[String]) -> Result<usize, RevokeError> {
        let mut bytes = Vec::with_capacity(ids.len());
        for id in ids {
            bytes.push(hex::decode(id.trim()).map_err(|_| RevokeError::NotHex(id.clone()))?);
        }
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        let adding = bytes.iter().filter(|b| !revoked.contains(*b)).count();
        if revoked.len() + adding > MAX_REVOKED {
            return Err(RevokeError::Full {
                held: revoked.len(),
                adding,
            });
        }
        revoked.extend(bytes);
        Ok(revoked.len())
    }
}

fn rule_of(c: &FailedCheck) -> String {
    match c {
        FailedCheck::Block(b) => format!("block {}: {}", b.block_id, b.rule),
        FailedCheck::Authorizer(a) => format!("agent: {}", a.rule),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> OperatorKey {
        OperatorKey::from_seed(&[b; 32]).unwrap()
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    const NOW: u64 = 1_800_000_000;

    fn kv(key: &str) -> Request<'_> {
        Request {
            op: Op::KvWrite,
            key: Some(key),
            now: at(NOW),
        }
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    fn caveats(op: Op, scope: Option<&str>, node: Option<u32>, exp: u64) -> Caveats {
        Caveats {
            op: Some(op),
            scope: scope.map(String::from),
            node,
            expires: Some(at(exp)),
        }
    }

    #[test]
    fn a_token_within_every_caveat_is_accepted() {
        let k = key(1);
        let v = Verifier::new(Some(&k.public_hex()), 3).unwrap();
        let t = k
            .mint(&caveats(Op::KvWrite, Some("app/"), Some(3), NOW + 10))
            .unwrap();
        assert_eq!(v.check(Some(&bearer(&t)), &kv("app/x")), Ok(()));
        // At the expiry second itself, still good; a second later, not.
        let mut r = kv("app/x");
        r.now = at(NOW + 10);
        assert_eq!(v.check(Some(&bearer(&t)), &r), Ok(()));
    }

    #[test]
    fn each_caveat_refuses_what_it_excludes() {
        let k = key(1);
        let v = Verifier::new(Some(&k.public_hex()), 3).unwrap();
        let t = k
            .mint(&caveats(Op::KvWrite, Some("app/"), Some(3), NOW + 10))
            .unwrap();
        let h = bearer(&t);
        // operation
        let r = Request {
            op: Op::ObjectPut,
            key: Some("app/x"),
            now: at(NOW),
        };
        let e = v.check(Some(&h), &r).unwrap_err();
        assert_eq!(e.reason(), "out_of_scope", "{e}");
        assert!(e.to_string().contains("operation(\"kv-write\")"), "{e}");
        assert_eq!(e.http_status(), 403);
        // scope
        let e = v.check(Some(&h), &kv("other/x")).unwrap_err();
        assert_eq!(e.reason(), "out_of_scope", "{e}");
        assert!(e.to_string().contains("starts_with(\"app/\")"), "{e}");
        // a scoped token on an operation without a key
        let ts = k
            .mint(&caveats(Op::TaskSubmit, Some("app/"), None, NOW + 10))
            .unwrap();
        let r = Request {
            op: Op::TaskSubmit,
            key: None,
            now: at(NOW),
        };
        assert_eq!(
            v.check(Some(&bearer(&ts)), &r).unwrap_err().reason(),
            "out_of_scope"
        );
        // node
        let other = Verifier::new(Some(&k.public_hex()), 4).unwrap();
        let e = other.check(Some(&h), &kv("app/x")).unwrap_err();
        assert_eq!(e.reason(), "out_of_scope", "{e}");
        assert!(e.to_string().contains("node(3)"), "{e}");
        // expiry
        let mut late = kv("app/x");
        late.now = at(NOW + 11);
        let e = v.check(Some(&h), &late).unwrap_err();
        assert_eq!(e.reason(), "expired", "{e}");
        assert_eq!(e.http_status(), 401);
    }

    #[test]
    fn attenuation_narrows_and_cannot_widen() {
        let k = key(1);
        let v = Verifier::new(Some(&k.public_hex()), 3).unwrap();
        let t = k
            .mint(&caveats(Op::KvWrite, Some("app/"), None, NOW + 100))
            .unwrap();
        let narrow = attenuate(
            &t,
            &k.public_hex(),
            &Caveats {
                scope: Some("app/users/".into()),
                expires: Some(at(NOW + 5)),
                ..Default::default()
            },
        )
        .unwrap();
        let h = bearer(&narrow);
        assert_eq!(v.check(Some(&h), &kv("app/users/1")), Ok(()));
        assert_eq!(
            v.check(Some(&h), &kv("app/other")).unwrap_err().reason(),
            "out_of_scope"
        );
        let mut late = kv("app/users/1");
        late.now = at(NOW + 6);
        assert_eq!(v.check(Some(&h), &late).unwrap_err().reason(), "expired");
        // An attenuation that tries to widen (another prefix, a later expiry) adds checks;
        // the parent's still hold.
        let wide = attenuate(
            &t,
            &k.public_hex(),
            &caveats(Op::KvWrite, Some("etc/"), None, NOW + 10_000),
        )
        .unwrap();
        let h = bearer(&wide);
        assert_eq!(
            v.check(Some(&h), &kv("etc/passwd")).unwrap_err().reason(),
            "out_of_scope"
        );
        let mut late = kv("app/x");
        late.now = at(NOW + 101);
        assert_eq!(v.check(Some(&h), &late).unwrap_err().reason(), "expired");
        // Attenuating a token of another root is refused at once.
        assert!(matches!(
            attenuate(&t, &key(2).public_hex(), &Caveats::default()),
            Err(MintError::Parent(_))
        ));
    }

    #[test]
    fn missing_malformed_and_foreign_tokens_are_refused() {
        let k = key(1);
        let v = Verifier::new(Some(&k.public_hex()), 3).unwrap();
        assert_eq!(v.check(None, &kv("a")).unwrap_err().reason(), "missing");
        assert_eq!(
            v.check(Some("Basic abc"), &kv("a")).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            v.check(Some("Bearer !!!"), &kv("a")).unwrap_err().reason(),
            "malformed"
        );
        let long = format!("Bearer {}", "A".repeat(MAX_TOKEN_CHARS + 1));
        assert_eq!(
            v.check(Some(&long), &kv("a")).unwrap_err().reason(),
            "malformed"
        );
        let forged = key(2)
            .mint(&caveats(Op::KvWrite, None, None, NOW + 10))
            .unwrap();
        let e = v.check(Some(&bearer(&forged)), &kv("a")).unwrap_err();
        assert_eq!(e.reason(), "wrong_root", "{e}");
        // An altered token (its first block's bytes changed) fails the signature.
        let good = k.mint(&caveats(Op::KvWrite, None, None, NOW + 10)).unwrap();
        let mut raw = biscuit_auth::Biscuit::from_base64(&good, k.0.public())
            .unwrap()
            .to_vec()
            .unwrap();
        let mid = raw.len() / 3;
        raw[mid] ^= 0x01;
        let altered = base64_url(&raw);
        let e = v.check(Some(&bearer(&altered)), &kv("a")).unwrap_err();
        assert!(
            matches!(e.reason(), "wrong_root" | "malformed"),
            "altered token not refused for its signature or encoding: {e}"
        );
        // No operator key: nothing state-changing is accepted.
        let none = Verifier::new(None, 3).unwrap();
        assert_eq!(
            none.check(Some(&bearer(&good)), &kv("a"))
                .unwrap_err()
                .reason(),
            "no_operator_key"
        );
        assert!(Verifier::new(Some("zz"), 3).is_err());
    }

    fn base64_url(b: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
            for _ in c.len()..3 {
                s.push('=');
            }
        }
        s
    }

    #[test]
    fn a_revoked_token_and_its_attenuations_are_refused() {
        let k = key(1);
        let v = Verifier::new(Some(&k.public_hex()), 3).unwrap();
        let t = k.mint(&caveats(Op::KvWrite, None, None, NOW + 10)).unwrap();
        let child = attenuate(&t, &k.public_hex(), &Caveats::default()).unwrap();
        let other = k.mint(&caveats(Op::KvWrite, None, None, NOW + 10)).unwrap();
        let ids = revocation_ids(&t, &k.public_hex()).unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(v.revoke(&ids), Ok(1));
        for tok in [&t, &child] {
            let e = v.check(Some(&bearer(tok)), &kv("a")).unwrap_err();
            assert_eq!(e.reason(), "revoked", "{e}");
        }
        assert_eq!(v.check(Some(&bearer(&other)), &kv("a")), Ok(()));
        // Bad ids change nothing; the bound is kept.
        assert_eq!(
            v.revoke(&["00".into(), "xx".into()]),
            Err(RevokeError::NotHex("xx".into()))
        );
        let many: Vec<String> = (0..MAX_REVOKED as u32)
            .map(|i| format!("{i:08x}"))
            .collect();
        assert!(matches!(
            v.revoke(&many),
            Err(RevokeError::Full { held: 1, .. })
        ));
        assert_eq!(v.revoke(&[]), Ok(1));
    }

    #[test]
    fn minting_needs_an_operation_and_an_expiry() {
        let k = key(1);
        assert!(matches!(
            k.mint(&Caveats {
                op: Some(Op::KvWrite),
                ..Default::default()
            }),
            Err(MintError::Unbounded)
        ));
        assert!(matches!(
            k.mint(&Caveats {
                expires: Some(at(NOW)),
                ..Default::default()
            }),
            Err(MintError::Unbounded)
        ));
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>(), Ok(op));
        }
        assert!("dark".parse::<Op>().unwrap_err().contains("kv-write"));
    }
}
