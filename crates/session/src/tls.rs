//! rustls configurations for neighbour sessions: TLS 1.3 only, hybrid post-quantum key
//! exchange, client certificates required. Certificates carry no identity (see the crate docs):
//! the verifiers check only that each side proves possession of the key it presented.
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, NamedGroup, ServerConfig, SignatureScheme,
};

use crate::{Error, Result};

/// The SNI name every agent uses; identities are checked by the binding, not by names.
pub const SERVER_NAME: &str = "agent.x0tta6bl4.invalid";
/// ALPN protocol of mesh sessions, so a session never talks to a different protocol by mistake.
pub const ALPN: &[u8] = b"x0tta6bl4/1";

/// Key-exchange policy of a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExchangePolicy {
    /// Only X25519MLKEM768 (`requirePostQuantum: true`).
    PostQuantumOnly,
    /// X25519MLKEM768 preferred, X25519 accepted (counted as a classical session).
    PreferPostQuantum,
    /// Only X25519: what a classical-only peer offers (used to test downgrade refusal).
    ClassicalOnly,
}

fn provider(policy: KeyExchangePolicy) -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = match policy {
        KeyExchangePolicy::PostQuantumOnly => vec![aws_lc_rs::kx_group::X25519MLKEM768],
        KeyExchangePolicy::PreferPostQuantum => {
            vec![aws_lc_rs::kx_group::X25519MLKEM768, aws_lc_rs::kx_group::X25519]
        }
        KeyExchangePolicy::ClassicalOnly => vec![aws_lc_rs::kx_group::X25519],
    };
    Arc::new(provider)
}

/// This process's TLS key and self-signed certificate (Ed25519: the cheapest handshake
/// signature; it proves possession only), made at start.
pub struct TlsKey {
    certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl TlsKey {
    pub fn generate() -> Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(Self {
            certificate: certificate.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.certificate.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

/// Verifies handshake signatures with the provider's algorithms; accepts any certificate.
#[derive(Debug)]
struct PossessionOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PossessionOnly {
    fn new(provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(Self {
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

/// The handshake-signature checks both verifiers share: TLS 1.2 is never offered, and a TLS 1.3
/// CertificateVerify must verify with the provider's algorithms (proof of key possession).
macro_rules! possession_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for PossessionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Identity comes from the ML-DSA binding after the handshake, never from the certificate.
        Ok(ServerCertVerified::assertion())
    }

    possession_checks!();
}

impl ClientCertVerifier for PossessionOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    possession_checks!();
}

/// The configuration of the side that connects.
pub fn client_config(key: &TlsKey, policy: KeyExchangePolicy) -> Result<Arc<ClientConfig>> {
    let provider = provider(policy);
    let verifier = PossessionOnly::new(&provider);
    let (chain, private) = key.chain();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, private)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Resumption would skip the key exchange; every session does a fresh hybrid exchange.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The configuration of the side that accepts.
pub fn server_config(key: &TlsKey, policy: KeyExchangePolicy) -> Result<Arc<ServerConfig>> {
    let provider = provider(policy);
    let verifier = PossessionOnly::new(&provider);
    let (chain, private) = key.chain();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Refuses a finished handshake whose group is classical when the policy requires PQ
/// (defence in depth: the offered groups already exclude it).
pub fn check_key_exchange(group: Option<NamedGroup>, policy: KeyExchangePolicy) -> Result<bool> {
    let post_quantum = group == Some(NamedGroup::X25519MLKEM768);
    if policy == KeyExchangePolicy::PostQuantumOnly && !post_quantum {
        return Err(Error::ClassicalKeyExchange(
            group.map_or_else(|| "none".into(), |g| format!("{g:?}")),
        ));
    }
    Ok(post_quantum)
}
