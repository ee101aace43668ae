//! The identity directory: every node's name, hierarchical address, role, public key and
//! position, shared read-only by a node's sub-machines (one copy per process in the
//! harness). Built once from the configuration's peer list, whose ids must equal their
//! index, so a lookup is an index.

use ed25519_dalek::VerifyingKey;

use crate::addr::{HierAddr, Role};
use crate::config::{ConfigError, PeerInfo};
use crate::wire::Dest;

/// One entry of the identity directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub addr: HierAddr,
    pub role: Role,
    pub key: VerifyingKey,
    /// Position, AU (what a coordinate-tagged timestamp from this node carries).
    pub position_au: [f64; 3],
}

/// Every node's identity, shared read-only (one copy per process in the harness).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub peers: Vec<DirEntry>,
    /// [`Directory::certified_message`], computed once (the tiles of a multi-tile process
    /// share one directory; `peers` must not change after the first call).
    pub certified: std::sync::OnceLock<Vec<u8>>,
}

impl Directory {
    pub fn from_peers(peers: &[PeerInfo]) -> Result<Self, ConfigError> {
        let mut v = Vec::with_capacity(peers.len());
        for (i, p) in peers.iter().enumerate() {
            if p.id as usize != i {
                return Err(ConfigError::IdMismatch { index: i, id: p.id });
            }
            let bytes: [u8; 32] = hex::decode(&p.public_key_hex)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(ConfigError::BadPublicKey(p.id))?;
            let key =
                VerifyingKey::from_bytes(&bytes).map_err(|_| ConfigError::BadPublicKey(p.id))?;
            v.push(DirEntry {
                name: p.name.clone(),
                addr: p.addr,
                role: p.role,
                key,
                position_au: p.position_au,
            });
        }
        Ok(Directory {
            peers: v,
            certified: Default::default(),
        })
    }
    /// What the authorities' threshold key signs to certify every key of the directory at
    /// once (issue 17): a domain tag, then SHA-256 over each entry in id order — its id,
    /// name, address, role and key. One signature, checked by each agent when it starts, so
    /// a key that is not the one the authorities certified (a swapped directory entry, a
    /// stale configuration) stops the agent with a clear error.
    pub fn certified_message(&self) -> Vec<u8> {
        self.certified
            .get_or_init(|| self.compute_certified_message())
            .clone()
    }

    fn compute_certified_message(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (i, e) in self.peers.iter().enumerate() {
            h.update((i as u32).to_be_bytes());
            h.update((e.name.len() as u32).to_be_bytes());
            h.update(e.name.as_bytes());
            for part in [e.addr.layer, e.addr.cluster, e.addr.cell, e.addr.tile] {
                h.update(part.to_be_bytes());
            }
            h.update([e.role as u8]);
            h.update(e.key.as_bytes());
        }
        let mut m = b"lightcone/directory/v1".to_vec();
        m.extend_from_slice(&(self.peers.len() as u32).to_be_bytes());
        m.extend_from_slice(&h.finalize());
        m
    }

    /// Checks `cert_hex`, the authorities' threshold signature (64 bytes hex) over this
    /// directory, under their group key `authorities`: what an agent and the simulator check
    /// before a node starts. The error says why.
    pub fn check_certificate(
        &self,
        cert_hex: &str,
        authorities: &VerifyingKey,
    ) -> Result<(), String> {
        let sig: [u8; 64] = hex::decode(cert_hex.trim())
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "not 64 bytes".to_string())?;
        if crate::trust::threshold::verify(authorities, &self.certified_message(), &sig) {
            Ok(())
        } else {
            Err(format!(
                "the authorities' signature does not verify over this directory of {} nodes: \
                 a node's key or identity differs from what the authorities certified",
                self.len()
            ))
        }
    }

    pub fn get(&self, id: u32) -> Option<&DirEntry> {
        self.peers.get(id as usize)
    }
    pub fn addr(&self, id: u32) -> Option<HierAddr> {
        self.get(id).map(|e| e.addr)
    }
    pub fn len(&self) -> usize {
        self.peers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
    /// Ids whose address satisfies `f`, ascending.
    pub fn ids_where(&self, f: impl Fn(&HierAddr) -> bool) -> Vec<u32> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, e)| f(&e.addr))
            .map(|(i, _)| i as u32)
            .collect()
    }
    /// The gateway of a scope: the lowest-id `Role::Gateway` node in it, else its lowest id.
    pub fn gateway_of(&self, scope: Dest) -> Option<u32> {
        let ids = self.ids_where(|a| scope.contains(a));
        ids.iter()
            .copied()
            .find(|i| self.peers[*i as usize].role == Role::Gateway)
            .or(ids.first().copied())
    }
}
