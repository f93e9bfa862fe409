//! rustls configurations for neighbour sessions: TLS 1.3 only, hybrid post-quantum key
//! exchange, client certificates required. Without SPIFFE, certificates carry no identity (see
//! the crate docs): the verifiers check only that each side proves possession of the key it
//! presented. With SPIFFE, each side presents its X.509-SVID and the verifiers validate the
//! peer's against the trust bundle ([`crate::svid`]).
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, NamedGroup, ServerConfig, SignatureScheme,
};
use std::time::SystemTime;

use crate::svid::{self, SvidCredentials, SvidFacts, SvidRefusal};
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
    let config = client_builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, private)?;
    Ok(finish_client(config))
}

/// The configuration of the side that accepts.
pub fn server_config(key: &TlsKey, policy: KeyExchangePolicy) -> Result<Arc<ServerConfig>> {
    let provider = provider(policy);
    let verifier = PossessionOnly::new(&provider);
    let (chain, private) = key.chain();
    let config = server_builder(provider)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)?;
    Ok(finish_server(config))
}

/// The connecting side of a mesh that takes identities from SPIFFE: it presents its current
/// X.509-SVID and accepts only a peer SVID of the mesh's trust domain.
pub fn svid_client_config(
    credentials: &Arc<SvidCredentials>,
    policy: KeyExchangePolicy,
) -> Result<Arc<ClientConfig>> {
    let provider = provider(policy);
    let verifier = SvidVerifier::new(credentials, &provider);
    let config = client_builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentSvid(Arc::clone(credentials))));
    Ok(finish_client(config))
}

/// The accepting side of a mesh that takes identities from SPIFFE.
pub fn svid_server_config(
    credentials: &Arc<SvidCredentials>,
    policy: KeyExchangePolicy,
) -> Result<Arc<ServerConfig>> {
    let provider = provider(policy);
    let verifier = SvidVerifier::new(credentials, &provider);
    let config = server_builder(provider)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentSvid(Arc::clone(credentials))));
    Ok(finish_server(config))
}

fn client_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    Ok(ClientConfig::builder_with_provider(provider).with_protocol_versions(&[&rustls::version::TLS13])?)
}

fn server_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>> {
    Ok(ServerConfig::builder_with_provider(provider).with_protocol_versions(&[&rustls::version::TLS13])?)
}

fn finish_client(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Resumption would skip the key exchange; every session does a fresh hybrid exchange.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn finish_server(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// Presents the SVID held at each handshake (none once it expired: no session can form).
#[derive(Debug)]
struct CurrentSvid(Arc<SvidCredentials>);

impl ResolvesClientCert for CurrentSvid {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.usable_key(SystemTime::now())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.usable_key(SystemTime::now())
    }
}

/// Verifies a peer's SVID chain against the trust bundle, then its handshake signature.
#[derive(Debug)]
struct SvidVerifier {
    credentials: Arc<SvidCredentials>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SvidVerifier {
    fn new(credentials: &Arc<SvidCredentials>, provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(Self {
            credentials: Arc::clone(credentials),
            algorithms: provider.signature_verification_algorithms,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        self.credentials.verify(&chain, now).map(drop).map_err(|refusal| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                refusal,
            ))))
        })
    }
}

impl ServerCertVerifier for SvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SVIDs name workloads by SPIFFE ID, not DNS: the server name is not checked here; the
        // session checks the SPIFFE ID against the node it dialled (svid::check_agreement).
        self.check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    possession_checks!();
}

impl ClientCertVerifier for SvidVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    possession_checks!();
}

/// The SVID facts of the peer of a finished handshake (its leaf certificate).
pub fn peer_svid(connection: &rustls::CommonState) -> Result<SvidFacts, SvidRefusal> {
    let leaf = connection
        .peer_certificates()
        .and_then(<[CertificateDer<'_>]>::first)
        .ok_or(SvidRefusal::NoSvid)?;
    svid::leaf_facts(leaf)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svid::tests::{TestCa, unix_now};
    use rustls::{ClientConnection, ServerConnection};

    const TD: &str = "x0tta6bl4.local";

    fn id(node: &str) -> String {
        format!("spiffe://{TD}/ns/default/mesh/demo/node/{node}")
    }

    /// Moves TLS bytes both ways until the handshake settles or a side fails.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> (ClientConnection, ServerConnection, Result<(), rustls::Error>) {
        let mut c = ClientConnection::new(client, server_name()).unwrap();
        let mut s = ServerConnection::new(server).unwrap();
        let result = (|| {
            for _ in 0..16 {
                let mut bytes = Vec::new();
                c.write_tls(&mut bytes).unwrap();
                if !bytes.is_empty() {
                    s.read_tls(&mut bytes.as_slice()).unwrap();
                    s.process_new_packets()?;
                }
                let mut back = Vec::new();
                s.write_tls(&mut back).unwrap();
                if !back.is_empty() {
                    c.read_tls(&mut back.as_slice()).unwrap();
                    c.process_new_packets()?;
                }
                if bytes.is_empty() && back.is_empty() {
                    break;
                }
            }
            Ok(())
        })();
        (c, s, result)
    }

    fn credentials(ca: &TestCa, svid: crate::svid::Svid) -> Arc<SvidCredentials> {
        let credentials = SvidCredentials::new(TD);
        credentials.set_bundles(ca.bundles(TD));
        credentials.set_svid(svid).unwrap();
        credentials
    }

    fn configs(
        client: &Arc<SvidCredentials>,
        server: &Arc<SvidCredentials>,
    ) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let policy = KeyExchangePolicy::PostQuantumOnly;
        (
            svid_client_config(client, policy).unwrap(),
            svid_server_config(server, policy).unwrap(),
        )
    }

    #[test]
    fn two_svids_of_the_trust_domain_make_a_hybrid_session_and_each_side_learns_the_others_id() {
        let ca = TestCa::new(TD);
        let now = unix_now();
        let client = credentials(&ca, ca.svid(&id("n1"), now - 5, 600));
        let server = credentials(&ca, ca.svid(&id("n2"), now - 5, 600));
        let (client_config, server_config) = configs(&client, &server);
        let (c, s, result) = handshake(Arc::clone(&client_config), Arc::clone(&server_config));
        result.unwrap();
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(
            c.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(peer_svid(&c).unwrap().spiffe_id, id("n2"));
        assert_eq!(peer_svid(&s).unwrap().spiffe_id, id("n1"));

        // A rotation: the next handshake presents the new SVID, with the same configurations.
        let renewed = ca.svid(&id("n1"), now, 1200);
        let renewed_expiry = renewed.facts.not_after;
        client.set_svid(renewed).unwrap();
        let (_, s, result) = handshake(client_config, server_config);
        result.unwrap();
        assert_eq!(peer_svid(&s).unwrap().not_after, renewed_expiry);
    }

    #[test]
    fn a_foreign_trust_domain_or_an_unknown_ca_is_refused_with_its_reason() {
        let ca = TestCa::new(TD);
        let foreign = TestCa::new("evil.example");
        let now = unix_now();
        let server = credentials(&ca, ca.svid(&id("n2"), now - 5, 600));
        // The server even trusts the foreign CA (federation): membership is still refused.
        let mut federated = ca.bundles(TD);
        federated.insert("evil.example", vec![foreign.der.clone()]);
        server.set_bundles(federated);
        let intruder = credentials(
            &foreign,
            foreign.svid("spiffe://evil.example/ns/default/mesh/demo/node/n1", now - 5, 600),
        );
        let rogue_ca = TestCa::new(TD);
        let forged = credentials(&rogue_ca, rogue_ca.svid(&id("n1"), now - 5, 600));
        // Each knows the mesh's public bundle, so it is the server that refuses it.
        for client in [&intruder, &forged] {
            client.set_bundles(ca.bundles(TD));
        }
        let mut reasons = Vec::new();
        for client in [&intruder, &forged] {
            let (client_config, server_config) = configs(client, &server);
            let (_, _, result) = handshake(client_config, server_config);
            let error = result.unwrap_err();
            reasons.push(svid::refusal_in(&error).map(SvidRefusal::reason));
        }
        assert_eq!(reasons, [Some("foreign_trust_domain"), Some("untrusted_svid")]);
    }

    #[test]
    fn an_agent_whose_svid_expired_presents_none_and_is_refused() {
        let ca = TestCa::new(TD);
        let now = unix_now();
        let expired = credentials(&ca, ca.svid(&id("n1"), now - 700, 600));
        let server = credentials(&ca, ca.svid(&id("n2"), now - 5, 600));
        let (client_config, server_config) = configs(&expired, &server);
        let (_, _, result) = handshake(client_config, server_config);
        assert!(
            matches!(result, Err(rustls::Error::NoCertificatesPresented)),
            "{result:?}"
        );
    }
}
