//! Content-addressed immutable objects: an object's id is the SHA-256 of its bytes (FIPS
//! 180-4), written as 64 lowercase hex digits.
//!
//! Immutability makes objects the easy case of causal state: an id names one value forever,
//! so replicas never conflict and a copy from anyone — a neighbour, a relay, a cache
//! light-hours away — is as good as the original once its hash checks. Every object that
//! enters the store from outside is verified ([`ObjectStore::insert`]), and every read
//! re-verifies ([`ObjectStore::get`]), so a tampered copy (in flight or in memory) is
//! detected and refused, never served.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// SHA-256 of an object's bytes. Serialised as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = ObjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ObjectError::BadId(s.chars().take(80).collect()));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| ObjectError::BadId(s.chars().take(80).collect()))?;
        Ok(Self(out))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An object as carried between nodes: its claimed id and its bytes. Verify before trusting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The id the sender claims.
    pub id: ObjectId,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Object {
    /// Wrap bytes with their true id.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            id: ObjectId::of(&bytes),
            bytes,
        }
    }

    /// Whether the bytes hash to the claimed id.
    pub fn verify(&self) -> Result<(), ObjectError> {
        verify(self.id, &self.bytes)
    }
}

/// Check that `bytes` hash to `id`.
pub fn verify(id: ObjectId, bytes: &[u8]) -> Result<(), ObjectError> {
    let actual = ObjectId::of(bytes);
    if actual == id {
        Ok(())
    } else {
        Err(ObjectError::Tampered {
            claimed: id,
            actual,
        })
    }
}

/// Why an object operation failed. In every case the store is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The bytes do not hash to the id: corrupted or tampered with. Drop and count it.
    #[error("object {claimed} is tampered: its bytes hash to {actual}")]
    Tampered {
        /// The id claimed.
        claimed: ObjectId,
        /// The hash of the bytes.
        actual: ObjectId,
    },
    /// The object is larger than `max_object_bytes`.
    #[error("object of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Storing it would exceed `max_total_bytes`.
    #[error("object store full: {used} + {len} bytes exceeds {max}")]
    Full {
        /// Bytes stored.
        used: usize,
        /// Object length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a 64-digit lowercase hex id.
    #[error("not an object id: {0:?}")]
    BadId(String),
}

/// Limits of an [`ObjectStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLimits {
    /// Largest object, bytes (default 1 MiB).
    pub max_object_bytes: NonZeroUsize,
    /// Most bytes stored (default 64 MiB).
    pub max_total_bytes: NonZeroUsize,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        Self {
            max_object_bytes: NonZeroUsize::new(1 << 20).expect("non-zero"),
            max_total_bytes: NonZeroUsize::new(64 << 20).expect("non-zero"),
        }
    }
}

/// A bounded set of immutable objects keyed by their hash.
#[derive(Clone, Debug, Default)]
pub struct ObjectStore {
    limits: ObjectLimits,
    objects: BTreeMap<ObjectId, Vec<u8>>,
    used_bytes: usize,
}

impl ObjectStore {
    /// An empty store.
    pub fn new(limits: ObjectLimits) -> Self {
        Self {
            limits,
            objects: BTreeMap::new(),
            used_bytes: 0,
        }
    }

    /// Store local bytes; returns their id. Storing the same bytes twice is a no-op.
    pub fn put(&mut self, bytes: Vec<u8>) -> Result<ObjectId, ObjectError> {
        let obj = Object::new(bytes);
        let id = obj.id;
        self.store(obj)?;
        Ok(id)
    }

    /// Store an object received from elsewhere, after checking its hash.
    pub fn insert(&mut self, obj: Object) -> Result<(), ObjectError> {
        obj.verify()?;
        self.store(obj)
    }

    /// The bytes of `id`, re-verified: `Ok(None)` if absent, `Err(Tampered)` if what we hold
    /// no longer hashes to `id`.
    pub fn get(&self, id: &ObjectId) -> Result<Option<&[u8]>, ObjectError> {
        match self.objects.get(id) {
            None => Ok(None),
            Some(bytes) => verify(*id, bytes).map(|()| Some(bytes.as_slice())),
        }
    }

    /// Of `ids` (e.g. those named in a peer's announcement), the ones not held here, in the
    /// order given without repeats: what to fetch.
    pub fn wants(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        let mut seen = std::collections::BTreeSet::new();
        ids.iter()
            .filter(|id| !self.objects.contains_key(id) && seen.insert(**id))
            .copied()
            .collect()
    }

    /// Whether `id` is held (without verifying).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }

    /// Re-hash every object; the ids of those that fail. O(bytes stored).
    pub fn verify_all(&self) -> Vec<ObjectId> {
        self.objects
            .iter()
            .filter(|(id, b)| verify(**id, b).is_err())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Drop an object (e.g. one `verify_all` found corrupt, to fetch a good copy again).
    pub fn remove(&mut self, id: &ObjectId) -> Option<Vec<u8>> {
        let bytes = self.objects.remove(id)?;
        self.used_bytes -= bytes.len();
        Some(bytes)
    }

    /// Ids held, in order.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.objects.keys().copied()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Bytes stored.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    fn store(&mut self, obj: Object) -> Result<(), ObjectError> {
        if self.objects.contains_key(&obj.id) {
            return Ok(());
        }
        let len = obj.bytes.len();
        let max = self.limits.max_object_bytes.get();
        if len > max {
            return Err(ObjectError::TooLarge { len, max });
        }
        let max = self.limits.max_total_bytes.get();
        if self.used_bytes + len > max {
            return Err(ObjectError::Full {
                used: self.used_bytes,
                len,
                max,
            });
        }
        self.used_bytes += len;
        self.objects.insert(obj.id, obj.bytes);
        Ok(())
    }

    /// Flip a bit of a stored object, as a compromised disk or memory would.
    #[cfg(test)]
    fn corrupt(&mut self, id: &ObjectId) {
        if let Some(b) = self.objects.get_mut(id) {
            b[0] ^= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        assert_eq!(
            ObjectId::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn put_get_round_trip_and_dedup() {
        let mut s = ObjectStore::new(ObjectLimits::default());
        let id = s.put(b"hello".to_vec()).unwrap();
        assert_eq!(s.put(b"hello".to_vec()).unwrap(), id);
        assert_eq!(s.len(), 1);
        assert_eq!(s.used_bytes(), 5);
        assert_eq!(s.get(&id).unwrap(), Some(&b"hello"[..]));
        assert_eq!(s.get(&ObjectId::of(b"other")).unwrap(), None);
        assert_eq!(id.to_string().parse::<ObjectId>().unwrap(), id);
        let absent = ObjectId::of(b"absent");
        assert_eq!(s.wants(&[id, absent, absent]), vec![absent]);
    }

    #[test]
    fn tampered_objects_in_flight_are_refused() {
        let mut s = ObjectStore::new(ObjectLimits::default());
        let mut obj = Object::new(b"payload".to_vec());
        obj.bytes[3] ^= 0x20;
        let err = s.insert(obj.clone()).unwrap_err();
        assert_eq!(
            err,
            ObjectError::Tampered {
                claimed: ObjectId::of(b"payload"),
                actual: ObjectId::of(&obj.bytes)
            }
        );
        assert!(s.is_empty());
        // The same bytes under their true id are fine.
        s.insert(Object::new(obj.bytes)).unwrap();
    }

    #[test]
    fn tampered_objects_at_rest_are_never_served() {
        let mut s = ObjectStore::new(ObjectLimits::default());
        let id = s.put(b"stored".to_vec()).unwrap();
        let other = s.put(b"intact".to_vec()).unwrap();
        s.corrupt(&id);
        assert!(matches!(s.get(&id), Err(ObjectError::Tampered { claimed, .. }) if claimed == id));
        assert_eq!(s.verify_all(), vec![id]);
        assert!(s.get(&other).unwrap().is_some());
        assert_eq!(s.remove(&id).map(|b| b.len()), Some(6));
        assert_eq!(s.used_bytes(), 6);
    }

    #[test]
    fn limits() {
        let mut s = ObjectStore::new(ObjectLimits {
            max_object_bytes: NonZeroUsize::new(4).unwrap(),
            max_total_bytes: NonZeroUsize::new(6).unwrap(),
        });
        assert_eq!(
            s.put(vec![0; 5]),
            Err(ObjectError::TooLarge { len: 5, max: 4 })
        );
        s.put(vec![1; 4]).unwrap();
        assert_eq!(
            s.put(vec![2; 3]),
            Err(ObjectError::Full {
                used: 4,
                len: 3,
                max: 6
            })
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn ids_parse_strictly_and_serialise_as_hex() {
        assert!("zz".parse::<ObjectId>().is_err());
        let upper = ObjectId::of(b"x").to_hex().to_uppercase();
        assert!(upper.parse::<ObjectId>().is_err());
        let obj = Object::new(b"x".to_vec());
        let json = serde_json::to_string(&obj).unwrap();
        assert!(json.contains(&obj.id.to_hex()));
        assert_eq!(serde_json::from_str::<Object>(&json).unwrap(), obj);
    }
}
