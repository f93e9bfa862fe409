//! The post-quantum authentication that follows the TLS handshake: each side sends its
//! endorsement and an ML-DSA-65 signature over the session's exporter value.
use x0tta6bl4_crypto::endorsement::{Endorsement, Refusal, TrustStore};
use x0tta6bl4_crypto::{NodeId, SigningContext, SigningKey};

use crate::{Error, Result};

const EXPORTER_LABEL: &[u8] = b"EXPORTER-x0tta6bl4-session-binding";
const MAGIC: &[u8; 4] = b"X0SA";
const VERSION: u8 = 1;
/// Largest binding message accepted (endorsement ≈ 5.4 KB, signature 3309 bytes).
pub const MAX_BINDING_LEN: usize = 16 * 1024;

/// Which end of the TLS connection signs: part of the signed data, so a client's signature
/// cannot be reflected back as the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Client => b'C',
            Role::Server => b'S',
        }
    }

    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

/// This agent's identity: its current key and the endorsement that vouches for it.
pub struct Identity {
    pub key: SigningKey,
    pub endorsement: Endorsement,
}

/// Who is on the other end, once proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node: NodeId,
    pub spiffe_id: String,
    pub key_epoch: u32,
}

/// The exporter value of a finished TLS 1.3 handshake.
pub fn exporter(connection: &rustls::ConnectionCommon<impl Sized>) -> Result<[u8; 32]> {
    let mut output = [0u8; 32];
    connection.export_keying_material(&mut output, EXPORTER_LABEL, None)?;
    Ok(output)
}

fn signed_data(role: Role, exporter: &[u8; 32]) -> [u8; 33] {
    let mut data = [0u8; 33];
    data[0] = role.byte();
    data[1..].copy_from_slice(exporter);
    data
}

/// The message this side sends: magic, version, endorsement, signature over role ‖ exporter.
pub fn binding_message(identity: &Identity, role: Role, exporter: &[u8; 32]) -> Result<Vec<u8>> {
    let endorsement = identity.endorsement.encode()?;
    let signature = identity
        .key
        .sign(SigningContext::SessionBinding, &signed_data(role, exporter))?;
    let mut message = Vec::with_capacity(9 + endorsement.len() + signature.0.len());
    message.extend_from_slice(MAGIC);
    message.push(VERSION);
    message.extend_from_slice(&(endorsement.len() as u16).to_be_bytes());
    message.extend_from_slice(&endorsement);
    message.extend_from_slice(&(signature.0.len() as u16).to_be_bytes());
    message.extend_from_slice(&signature.0);
    Ok(message)
}

/// Checks the peer's binding message against our view of the session and the trust store.
pub fn verify_binding(
    message: &[u8],
    peer_role: Role,
    exporter: &[u8; 32],
    trust: &mut TrustStore,
    now_unix: u64,
) -> Result<PeerIdentity> {
    let malformed = || Error::Authentication("malformed binding message");
    if message.len() > MAX_BINDING_LEN || message.len() < 9 || &message[..4] != MAGIC || message[4] != VERSION
    {
        return Err(malformed());
    }
    let endorsement_len = usize::from(u16::from_be_bytes([message[5], message[6]]));
    let rest = &message[7..];
    if rest.len() < endorsement_len + 2 {
        return Err(malformed());
    }
    let (endorsement, rest) = rest.split_at(endorsement_len);
    let signature_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let signature = &rest[2..];
    if signature.len() != signature_len {
        return Err(malformed());
    }
    let endorsement = Endorsement::decode(endorsement).map_err(|_| malformed())?;
    let node = trust.admit(&endorsement, now_unix).map_err(|error| match error {
        x0tta6bl4_crypto::Error::Endorsement("revoked") => {
            Error::Authentication("key revoked by the mesh authority")
        }
        x0tta6bl4_crypto::Error::Endorsement("expired") => Error::Authentication("key expired"),
        _ => Error::Authentication("key not endorsed by the mesh authority"),
    })?;
    trust
        .verify(
            SigningContext::SessionBinding,
            &node,
            endorsement.key_epoch,
            &signed_data(peer_role, exporter),
            signature,
            now_unix,
        )
        .map_err(|refusal| match refusal {
            Refusal::BadSignature => {
                Error::Authentication("binding signature does not verify for this session")
            }
            Refusal::Expired => Error::Authentication("key expired"),
            Refusal::UnknownKey => Error::Authentication("key not endorsed by the mesh authority"),
            Refusal::Revoked => Error::Authentication("key revoked by the mesh authority"),
        })?;
    Ok(PeerIdentity {
        node,
        spiffe_id: endorsement.spiffe_id,
        key_epoch: endorsement.key_epoch,
    })
}
