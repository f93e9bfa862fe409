//! SPIFFE X.509-SVIDs as the certificates of neighbour sessions (meshes that name a Workload
//! API socket).
//!
//! The SVID layer answers "is this the workload SPIRE attested as node N of this trust domain?";
//! the ML-DSA binding that follows ([`crate::binding`]) answers "does it hold the post-quantum
//! key the mesh authority endorsed for that same SPIFFE ID?". A session needs both, for the same
//! SPIFFE ID ([`check_agreement`]).
//!
//! - [`SvidCredentials`] holds this agent's current SVID and the trust bundles. It is shared by
//!   the TLS configurations (the certificate resolver reads the SVID at each handshake, so a
//!   rotation needs no new configuration and leaves open sessions alone) and by the verifier.
//! - [`verify_chain`] validates a peer's chain (rustls-webpki path building to the bundle of the
//!   mesh's trust domain, validity, EKU) and returns its SPIFFE ID and expiry; every refusal
//!   has a reason ([`SvidRefusal::reason`]).
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use spiffe::SpiffeId;
use webpki::{EndEntityCert, KeyUsage};
use x0tta6bl4_crypto::{NodeId, node_id_for};

use crate::{Error, Result};

/// Why a peer's SVID was refused; each is a `reason` label of the agents' refusal counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidRefusal {
    #[error("the peer presented no X.509-SVID")]
    NoSvid,
    #[error("the certificate is not an X.509-SVID: {0}")]
    NotAnSvid(String),
    #[error("SPIFFE ID {spiffe_id} is in a foreign trust domain (the mesh's is {expected})")]
    ForeignTrustDomain { spiffe_id: String, expected: String },
    #[error("the SVID expired at unix time {not_after}")]
    Expired { not_after: u64 },
    #[error("the SVID is not valid yet")]
    NotYetValid,
    #[error("the SVID does not chain to the trust bundle of {trust_domain}: {detail}")]
    Untrusted { trust_domain: String, detail: String },
    #[error("the SVID names {presented}, the node dialled is {expected}")]
    WrongSpiffeId { presented: String, expected: String },
    #[error("the SVID names {svid}, the endorsement {endorsement}")]
    EndorsementMismatch { svid: String, endorsement: String },
    #[error("a rotated SVID names {presented}, the session's peer is {expected}")]
    RotatedToAnotherId { presented: String, expected: String },
}

impl SvidRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            SvidRefusal::NoSvid => "no_svid",
            SvidRefusal::NotAnSvid(_) => "not_an_svid",
            SvidRefusal::ForeignTrustDomain { .. } => "foreign_trust_domain",
            SvidRefusal::Expired { .. } => "expired_svid",
            SvidRefusal::NotYetValid => "svid_not_yet_valid",
            SvidRefusal::Untrusted { .. } => "untrusted_svid",
            SvidRefusal::WrongSpiffeId { .. } => "wrong_spiffe_id",
            SvidRefusal::EndorsementMismatch { .. } => "svid_endorsement_mismatch",
            SvidRefusal::RotatedToAnotherId { .. } => "svid_rotated_to_another_id",
        }
    }
}

/// What a validated SVID says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFacts {
    pub spiffe_id: String,
    /// The leaf's notBefore, in unix seconds.
    pub not_before: u64,
    /// The leaf's notAfter, in unix seconds.
    pub not_after: u64,
}

impl SvidFacts {
    /// Time left until expiry at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Duration::from_secs(self.not_after.saturating_sub(now))
    }
}

/// The SPIFFE ID (the one URI SAN) and notAfter of a DER certificate.
pub fn leaf_facts(der: &[u8]) -> Result<SvidFacts, SvidRefusal> {
    let not_svid = |why: String| SvidRefusal::NotAnSvid(why);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| not_svid(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| not_svid(e.to_string()))?
        .ok_or_else(|| not_svid("no subjectAltName".to_owned()))?;
    let mut uris = names.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return Err(not_svid("an X.509-SVID has exactly one URI SAN".to_owned()));
    };
    let spiffe_id = SpiffeId::new(uri).map_err(|e| not_svid(format!("URI SAN {uri:?}: {e}")))?;
    let validity = cert.validity();
    Ok(SvidFacts {
        spiffe_id: spiffe_id.to_string(),
        not_before: u64::try_from(validity.not_before.timestamp()).unwrap_or(0),
        not_after: u64::try_from(validity.not_after.timestamp()).unwrap_or(0),
    })
}

/// This agent's SVID: the chain it presents and its private key.
pub struct Svid {
    pub facts: SvidFacts,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Svid {
    /// From the Workload API's DER chain (leaf first) and PKCS#8 private key.
    pub fn from_der(chain: Vec<Vec<u8>>, pkcs8_key: Vec<u8>) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Certificate("an SVID without a certificate".to_owned()))?;
        let facts = leaf_facts(leaf).map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(Svid {
            facts,
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivatePkcs8KeyDer::from(pkcs8_key),
        })
    }

    /// The chain as DER bytes (what an [`x0tta6bl4_wire`-level] SVID update carries).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.iter().map(|c| c.as_ref().to_vec()).collect()
    }

    fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), key)))
    }
}

/// Trust bundles by trust domain name: the X.509 authorities the Workload API returned.
#[derive(Debug, Clone, Default)]
pub struct TrustBundles {
    authorities: BTreeMap<String, Vec<CertificateDer<'static>>>,
}

impl TrustBundles {
    pub fn insert(&mut self, trust_domain: &str, authorities: Vec<Vec<u8>>) {
        self.authorities.insert(
            trust_domain.to_owned(),
            authorities.into_iter().map(CertificateDer::from).collect(),
        );
    }

    pub fn authorities(&self, trust_domain: &str) -> &[CertificateDer<'static>] {
        self.authorities.get(trust_domain).map_or(&[], Vec::as_slice)
    }
}

/// Validates a peer's chain (leaf first) for a mesh of `trust_domain` at `now`: it must name a
/// SPIFFE ID of that trust domain and chain to that trust domain's bundle. A federated bundle
/// does not make a foreign trust domain's SVID a member of this mesh.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    bundles: &TrustBundles,
    trust_domain: &str,
    provider: &CryptoProvider,
    now: UnixTime,
) -> Result<SvidFacts, SvidRefusal> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidRefusal::NoSvid)?;
    let facts = leaf_facts(leaf)?;
    let member = SpiffeId::new(&facts.spiffe_id)
        .map(|id| id.trust_domain_name() == trust_domain)
        .unwrap_or(false);
    if !member {
        return Err(SvidRefusal::ForeignTrustDomain {
            spiffe_id: facts.spiffe_id,
            expected: trust_domain.to_owned(),
        });
    }
    let untrusted = |detail: String| SvidRefusal::Untrusted {
        trust_domain: trust_domain.to_owned(),
        detail,
    };
    let anchors = bundles
        .authorities(trust_domain)
        .iter()
        .filter_map(|authority| webpki::anchor_from_trusted_cert(authority).ok())
        .collect::<Vec<_>>();
    if anchors.is_empty() {
        return Err(untrusted("no trust bundle for it".to_owned()));
    }
    let cert = EndEntityCert::try_from(leaf).map_err(|e| SvidRefusal::NotAnSvid(format!("{e:?}")))?;
    // SPIRE's SVIDs carry both serverAuth and clientAuth; sessions are symmetric, so either
    // end may be the TLS client: require clientAuth of both.
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &anchors,
        intermediates,
        now,
        KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => SvidRefusal::Expired {
            not_after: facts.not_after,
        },
        webpki::Error::CertNotValidYet { .. } => SvidRefusal::NotYetValid,
        other => untrusted(format!("{other:?}")),
    })?;
    Ok(facts)
}

/// A session forms only when the SVID, the endorsement and the node expected agree on one
/// SPIFFE ID (`expected` is the node dialled, as the MeshNode records place it at that address;
/// an accepted connection has none).
pub fn check_agreement(
    svid: &SvidFacts,
    endorsed_spiffe_id: &str,
    expected: Option<NodeId>,
) -> Result<(), SvidRefusal> {
    if let Some(expected) = expected
        && node_id_for(&svid.spiffe_id) != expected
    {
        return Err(SvidRefusal::WrongSpiffeId {
            presented: svid.spiffe_id.clone(),
            expected: format!("node {expected}"),
        });
    }
    if svid.spiffe_id != endorsed_spiffe_id {
        return Err(SvidRefusal::EndorsementMismatch {
            svid: svid.spiffe_id.clone(),
            endorsement: endorsed_spiffe_id.to_owned(),
        });
    }
    Ok(())
}

/// This agent's current SVID and the trust bundles, updated as the Workload API rotates them.
pub struct SvidCredentials {
    trust_domain: String,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<(Arc<Svid>, Arc<CertifiedKey>)>>,
    bundles: RwLock<TrustBundles>,
}

impl std::fmt::Debug for SvidCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SvidCredentials")
            .field("trust_domain", &self.trust_domain)
            .field("svid", &self.svid().map(|s| s.facts.clone()))
            .finish_non_exhaustive()
    }
}

impl SvidCredentials {
    pub fn new(trust_domain: &str) -> Arc<Self> {
        Arc::new(SvidCredentials {
            trust_domain: trust_domain.to_owned(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            current: RwLock::new(None),
            bundles: RwLock::new(TrustBundles::default()),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Installs a new SVID (a rotation): later handshakes present it.
    pub fn set_svid(&self, svid: impl Into<Arc<Svid>>) -> Result<()> {
        let svid = svid.into();
        let key = svid.certified_key(&self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some((svid, key));
        Ok(())
    }

    pub fn set_bundles(&self, bundles: TrustBundles) {
        *self.bundles.write().unwrap_or_else(PoisonError::into_inner) = bundles;
    }

    pub fn svid(&self) -> Option<Arc<Svid>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|(svid, _)| Arc::clone(svid))
    }

    /// The SVID to present, if one is held and unexpired at `now`.
    pub fn usable_key(&self, now: SystemTime) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|(svid, _)| !svid.facts.remaining(now).is_zero())
            .map(|(_, key)| Arc::clone(key))
    }

    /// Validates a peer's chain against the current bundles.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<SvidFacts, SvidRefusal> {
        let bundles = self.bundles.read().unwrap_or_else(PoisonError::into_inner);
        verify_chain(chain, &bundles, &self.trust_domain, &self.provider, now)
    }

    /// Validates the chain of a peer's SVID update: valid now and for the same SPIFFE ID.
    pub fn verify_rotation(&self, chain: &[Vec<u8>], peer_spiffe_id: &str) -> Result<SvidFacts, SvidRefusal> {
        let chain: Vec<CertificateDer<'_>> =
            chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let facts = self.verify(&chain, UnixTime::now())?;
        if facts.spiffe_id != peer_spiffe_id {
            return Err(SvidRefusal::RotatedToAnotherId {
                presented: facts.spiffe_id,
                expected: peer_spiffe_id.to_owned(),
            });
        }
        Ok(facts)
    }
}

/// The SVID refusal inside a failed handshake's error, if the verifier refused an SVID.
pub fn refusal_in(error: &rustls::Error) -> Option<&SvidRefusal> {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<SvidRefusal>()
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };

    /// A SPIFFE trust domain's CA, as SPIRE makes one (test fixture: rcgen, ECDSA P-256).
    pub(crate) struct TestCa {
        pub der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new(trust_domain: &str) -> Self {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{trust_domain} CA"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.subject_alt_names.push(SanType::URI(
                format!("spiffe://{trust_domain}").try_into().unwrap(),
            ));
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                der: cert.der().to_vec(),
                issuer: Issuer::new(params, key),
            }
        }

        /// An X.509-SVID for `spiffe_id`, valid from `from` for `lifetime` (unix seconds).
        pub(crate) fn svid(&self, spiffe_id: &str, from: i64, lifetime: i64) -> Svid {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .subject_alt_names
                .push(SanType::URI(spiffe_id.try_into().unwrap()));
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
            params.not_after = time::OffsetDateTime::from_unix_timestamp(from + lifetime).unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Svid::from_der(vec![cert.der().to_vec()], key.serialize_der()).unwrap()
        }

        pub(crate) fn bundles(&self, trust_domain: &str) -> TrustBundles {
            let mut bundles = TrustBundles::default();
            bundles.insert(trust_domain, vec![self.der.clone()]);
            bundles
        }
    }

    pub(crate) fn unix_now() -> i64 {
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
    }

    const TD: &str = "x0tta6bl4.local";
    const ID: &str = "spiffe://x0tta6bl4.local/ns/default/mesh/demo/node/n1";

    fn check(svid: &Svid, bundles: &TrustBundles) -> Result<SvidFacts, SvidRefusal> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let chain: Vec<_> = svid.chain_der().into_iter().map(CertificateDer::from).collect();
        verify_chain(&chain, bundles, TD, &provider, UnixTime::now())
    }

    #[test]
    fn an_svid_of_the_trust_domain_is_accepted_with_its_id_and_expiry() {
        let ca = TestCa::new(TD);
        let now = unix_now();
        let svid = ca.svid(ID, now - 10, 3600);
        let facts = check(&svid, &ca.bundles(TD)).unwrap();
        assert_eq!(facts.spiffe_id, ID);
        assert_eq!(facts.not_after, u64::try_from(now + 3590).unwrap());
    }

    #[test]
    fn each_bad_svid_is_refused_with_its_reason() {
        let ca = TestCa::new(TD);
        let other_ca = TestCa::new(TD);
        let foreign = TestCa::new("evil.example");
        let now = unix_now();
        let expired = ca.svid(ID, now - 7200, 3600);
        let future = ca.svid(ID, now + 3600, 3600);
        let foreign_svid = foreign.svid("spiffe://evil.example/ns/default/mesh/demo/node/n1", now, 60);
        let mut federated = ca.bundles(TD);
        federated.insert("evil.example", vec![foreign.der.clone()]);
        let reasons = [
            check(&expired, &ca.bundles(TD)),
            check(&future, &ca.bundles(TD)),
            check(&ca.svid(ID, now, 60), &other_ca.bundles(TD)),
            check(&ca.svid(ID, now, 60), &TrustBundles::default()),
            check(&foreign_svid, &federated),
        ]
        .map(|result| result.unwrap_err().reason());
        assert_eq!(
            reasons,
            [
                "expired_svid",
                "svid_not_yet_valid",
                "untrusted_svid",
                "untrusted_svid",
                "foreign_trust_domain"
            ]
        );
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            verify_chain(&[], &ca.bundles(TD), TD, &provider, UnixTime::now()),
            Err(SvidRefusal::NoSvid)
        );
    }

    #[test]
    fn a_certificate_without_exactly_one_spiffe_uri_is_not_an_svid() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dns_only = CertificateParams::new(vec!["agent.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(leaf_facts(dns_only.der()).unwrap_err().reason(), "not_an_svid");
        let mut two = CertificateParams::new(Vec::<String>::new()).unwrap();
        for id in [ID, "spiffe://x0tta6bl4.local/other"] {
            two.subject_alt_names.push(SanType::URI(id.try_into().unwrap()));
        }
        let two = two.self_signed(&key).unwrap();
        assert_eq!(leaf_facts(two.der()).unwrap_err().reason(), "not_an_svid");
        assert_eq!(leaf_facts(b"not der").unwrap_err().reason(), "not_an_svid");
    }

    #[test]
    fn the_svid_endorsement_and_dialled_node_must_name_one_id() {
        let facts = SvidFacts {
            spiffe_id: ID.to_owned(),
            not_before: 0,
            not_after: 0,
        };
        assert_eq!(check_agreement(&facts, ID, Some(node_id_for(ID))), Ok(()));
        assert_eq!(check_agreement(&facts, ID, None), Ok(()));
        let other = "spiffe://x0tta6bl4.local/ns/default/mesh/demo/node/n2";
        assert_eq!(
            check_agreement(&facts, ID, Some(node_id_for(other)))
                .unwrap_err()
                .reason(),
            "wrong_spiffe_id"
        );
        assert_eq!(
            check_agreement(&facts, other, None).unwrap_err().reason(),
            "svid_endorsement_mismatch"
        );
    }

    #[test]
    fn a_rotation_must_keep_the_spiffe_id_and_an_expired_svid_is_not_presented() {
        let ca = TestCa::new(TD);
        let credentials = SvidCredentials::new(TD);
        credentials.set_bundles(ca.bundles(TD));
        let now = unix_now();
        let renewed = ca.svid(ID, now, 120);
        assert_eq!(
            credentials
                .verify_rotation(&renewed.chain_der(), ID)
                .unwrap()
                .spiffe_id,
            ID
        );
        let other = ca.svid("spiffe://x0tta6bl4.local/ns/default/mesh/demo/node/n2", now, 120);
        assert_eq!(
            credentials
                .verify_rotation(&other.chain_der(), ID)
                .unwrap_err()
                .reason(),
            "svid_rotated_to_another_id"
        );
        assert!(credentials.usable_key(SystemTime::now()).is_none());
        credentials.set_svid(ca.svid(ID, now - 100, 90)).unwrap();
        assert!(credentials.usable_key(SystemTime::now()).is_none(), "expired");
        credentials.set_svid(renewed).unwrap();
        assert!(credentials.usable_key(SystemTime::now()).is_some());
        assert!(
            !format!("{credentials:?}").contains("key:"),
            "the key is never printed"
        );
    }
}
