//! Revocations: the mesh authority's signed list of node keys no agent may trust any more.
//!
//! Each entry names a node (by its SPIFFE ID) and a key epoch: that epoch and every earlier
//! one are revoked, so a compromised key cannot be replaced by an older one the node held. The
//! list is whole (the current list replaces the previous one) and carries a serial number that
//! grows with every change, so an agent never goes back to an older list it was shown again.
use crate::reader::{Reader, with_signature};
use crate::{Error, NodeId, Result, SigningContext, SigningKey, VerifyingKey, node_id_for};

const MAGIC: &[u8; 5] = b"X0REV";
const VERSION: u8 = 1;
/// SPIFFE IDs are URIs of at most 2048 bytes (SPIFFE ID specification, section 2.3).
const MAX_SPIFFE_ID: usize = 2048;
/// More entries than any mesh has nodes: a bound on what a decoder allocates.
pub const MAX_ENTRIES: usize = 16_384;
/// The mesh names a list is bound to (namespace/name) are at most this long.
const MAX_MESH: usize = 512;

/// One revoked node key: `through_epoch` and every earlier epoch of the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RevokedKey {
    pub spiffe_id: String,
    pub through_epoch: u32,
}

impl RevokedKey {
    pub fn node_id(&self) -> NodeId {
        node_id_for(&self.spiffe_id)
    }
}

/// The signed statement "in this mesh, from this serial on, these keys are revoked".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The mesh the list is for, "namespace/name": a list of one mesh means nothing in another.
    pub mesh: String,
    pub serial: u64,
    /// When the authority signed it, Unix milliseconds.
    pub issued_at_ms: u64,
    pub entries: Vec<RevokedKey>,
    pub signature: Vec<u8>,
}

impl RevocationList {
    /// The authority signs a list (its entries sorted, so equal lists have equal bytes).
    pub fn issue(
        authority: &SigningKey,
        mesh: &str,
        serial: u64,
        issued_at_ms: u64,
        mut entries: Vec<RevokedKey>,
    ) -> Result<Self> {
        entries.sort();
        entries.dedup();
        let mut list = Self {
            mesh: mesh.to_owned(),
            serial,
            issued_at_ms,
            entries,
            signature: Vec::new(),
        };
        list.signature = authority
            .sign(SigningContext::Revocation, &list.signed_bytes()?)?
            .0;
        Ok(list)
    }

    /// The canonical bytes the authority signs: every field, length-prefixed.
    pub fn signed_bytes(&self) -> Result<Vec<u8>> {
        if self.mesh.len() > MAX_MESH {
            return Err(Error::Revocation("mesh name longer than 512 bytes"));
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(Error::Revocation("more than 16384 revoked keys"));
        }
        let mut bytes = Vec::with_capacity(32 + self.mesh.len() + self.entries.len() * 96);
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&(self.mesh.len() as u16).to_be_bytes());
        bytes.extend_from_slice(self.mesh.as_bytes());
        bytes.extend_from_slice(&self.serial.to_be_bytes());
        bytes.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for entry in &self.entries {
            if entry.spiffe_id.len() > MAX_SPIFFE_ID {
                return Err(Error::Revocation("SPIFFE ID longer than 2048 bytes"));
            }
            bytes.extend_from_slice(&(entry.spiffe_id.len() as u16).to_be_bytes());
            bytes.extend_from_slice(entry.spiffe_id.as_bytes());
            bytes.extend_from_slice(&entry.through_epoch.to_be_bytes());
        }
        Ok(bytes)
    }

    /// The list as published: its signed bytes, then the signature (length-prefixed).
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(with_signature(self.signed_bytes()?, &self.signature))
    }

    /// Parses what [`Self::encode`] wrote; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = || Error::Revocation("malformed revocation list");
        let mut reader = Reader::new(bytes, || Error::Revocation("truncated revocation list"));
        reader.expect_header(MAGIC, VERSION, malformed)?;
        let mesh = reader.text(MAX_MESH, malformed)?;
        let serial = reader.u64()?;
        let issued_at_ms = reader.u64()?;
        let count = usize::from(reader.u16()?);
        if count > MAX_ENTRIES {
            return Err(malformed());
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let spiffe_id = reader.text(MAX_SPIFFE_ID, malformed)?;
            let through_epoch = reader.u32()?;
            entries.push(RevokedKey {
                spiffe_id,
                through_epoch,
            });
        }
        let signature = reader.signature(malformed)?;
        Ok(Self {
            mesh,
            serial,
            issued_at_ms,
            entries,
            signature,
        })
    }

    /// Checks that one of `authorities` signed the list for `mesh`.
    pub fn verify(&self, mesh: &str, authorities: &[VerifyingKey]) -> Result<()> {
        if self.mesh != mesh {
            return Err(Error::Revocation("revocation list of another mesh"));
        }
        let signed = self.signed_bytes()?;
        let vouched = authorities.iter().any(|authority| {
            authority
                .verify(SigningContext::Revocation, &signed, &self.signature)
                .is_ok()
        });
        if vouched {
            Ok(())
        } else {
            Err(Error::Revocation("not signed by a mesh authority"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "ns/demo";
    const N1: &str = "spiffe://x0.local/ns/ns/mesh/demo/node/n1";
    const N2: &str = "spiffe://x0.local/ns/ns/mesh/demo/node/n2";

    fn entry(spiffe_id: &str, through_epoch: u32) -> RevokedKey {
        RevokedKey {
            spiffe_id: spiffe_id.to_owned(),
            through_epoch,
        }
    }

    #[test]
    fn a_list_signed_by_the_authority_verifies_for_its_mesh_only() {
        let authority = SigningKey::generate().unwrap();
        let list =
            RevocationList::issue(&authority, MESH, 3, 1_000, vec![entry(N2, 4), entry(N1, 1)]).unwrap();
        assert_eq!(list.entries[0], entry(N1, 1), "entries sorted");
        let decoded = RevocationList::decode(&list.encode().unwrap()).unwrap();
        assert_eq!(decoded, list);
        let authorities = [authority.verifying_key().clone()];
        decoded.verify(MESH, &authorities).unwrap();
        assert!(
            decoded
                .verify("ns/other", &authorities)
                .unwrap_err()
                .to_string()
                .contains("another mesh")
        );
        let impostor = SigningKey::generate().unwrap();
        assert!(decoded.verify(MESH, &[impostor.verifying_key().clone()]).is_err());
    }

    #[test]
    fn a_tampered_list_does_not_verify_and_garbage_never_panics() {
        let authority = SigningKey::generate().unwrap();
        let list = RevocationList::issue(&authority, MESH, 3, 1_000, vec![entry(N1, 5)]).unwrap();
        let authorities = [authority.verifying_key().clone()];
        let mut shortened = list.clone();
        shortened.entries.clear();
        assert!(shortened.verify(MESH, &authorities).is_err(), "an entry dropped");
        let mut older = list.clone();
        older.entries[0].through_epoch = 4;
        assert!(older.verify(MESH, &authorities).is_err(), "an epoch lowered");
        let bytes = list.encode().unwrap();
        for cut in [0, 1, 5, 9, 30, bytes.len() - 1] {
            assert!(
                RevocationList::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RevocationList::decode(&longer).is_err());
        for seed in 0..64u8 {
            let noise: Vec<u8> = (0..200u16)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
                .collect();
            let _ = RevocationList::decode(&noise);
        }
    }
}
