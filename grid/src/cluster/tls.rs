//! Mutual TLS for the cluster: every node and client presents a certificate
//! signed by the cluster CA and verifies its peer's; anything else is
//! refused during the QUIC handshake.

use std::path::Path;
use std::sync::Arc;

use hydracache_protocol::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// The TLS server name every node certificate carries and every connection
/// asks for. Peers are authenticated by the CA that signed them; which node
/// they are is established by the Hello handshake that follows.
pub const SERVER_NAME: &str = "node.hydracache";

/// ALPN protocol id: the protocol version a connection speaks.
pub const ALPN: &[u8] = b"hydracache/1";

/// The subject alternative name (a URI) that grants a certificate's holder
/// the member role (and the client role). See docs/security.md.
pub const MEMBER_ROLE_URI: &str = "urn:hydracache:role:member";

/// The subject alternative name (a URI) that grants a certificate's holder
/// the client role only.
pub const CLIENT_ROLE_URI: &str = "urn:hydracache:role:client";

/// The role URI a certificate for `role` carries.
fn role_uri(role: Role) -> &'static str {
    match role {
        Role::Member => MEMBER_ROLE_URI,
        Role::Client => CLIENT_ROLE_URI,
    }
}

/// What a (verified) leaf certificate vouches for: its subject common name
/// and the role its URI subject alternative names grant (member wins if it
/// names both). Bytes that do not parse vouch for nothing.
pub(crate) fn certified(der: &[u8]) -> super::handshake::Certified {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Default::default();
    };
    let node_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let role = if uris.contains(&MEMBER_ROLE_URI) {
        Some(Role::Member)
    } else if uris.contains(&CLIENT_ROLE_URI) {
        Some(Role::Client)
    } else {
        None
    };
    super::handshake::Certified { node_id, role }
}

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file held no certificate or no private key, or was malformed.
    #[error("{what}: {message}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the material (e.g. a key that does not match its certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA's verifier could not be built (e.g. an empty CA bundle).
    #[error("cannot build the peer verifier: {0}")]
    Verifier(String),
}

/// A node's TLS identity: the cluster CA bundle, its certificate chain and key.
///
/// ```
/// use hydracache::cluster::DevCa;
/// let ca = DevCa::new("orders").unwrap();
/// let tls = ca.issue("api-1").unwrap();
/// assert_eq!(tls.chain_len(), 1);
/// ```
pub struct TlsConfig {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsConfig {
    fn clone(&self) -> Self {
        TlsConfig {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_certs", &self.ca.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsConfig {
    /// Loads the cluster CA bundle, this node's certificate chain and its
    /// private key from PEM files (for production).
    ///
    /// ```no_run
    /// let tls = hydracache::cluster::TlsConfig::from_pem_files("ca.pem", "node.pem", "node.key").unwrap();
    /// ```
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_pem(
            &read(ca.as_ref())?,
            &read(cert.as_ref())?,
            &read(key.as_ref())?,
        )
    }

    /// [`TlsConfig::from_pem_files`] from PEM bytes.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        let certs =
            |what: &'static str, pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, TlsError> {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::Pem {
                        what,
                        message: e.to_string(),
                    })?;
                if certs.is_empty() {
                    return Err(TlsError::Pem {
                        what,
                        message: "no certificate found".into(),
                    });
                }
                Ok(certs)
            };
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: "private key",
            message: e.to_string(),
        })?;
        let config = TlsConfig {
            ca: certs("CA bundle", ca)?,
            chain: certs("certificate", cert)?,
            key,
        };
        // Fail now, not at the first connection, if the pieces do not fit.
        config.server_crypto()?;
        config.client_crypto()?;
        Ok(config)
    }

    /// The node id this node's certificate names (its subject common
    /// name), if it names one: the only node id its peers accept from it,
    /// which a client built without
    /// [`NodeBuilder::node_id`](super::NodeBuilder::node_id) takes.
    ///
    /// ```
    /// use hydracache::cluster::DevCa;
    ///
    /// let ca = DevCa::new("orders").unwrap();
    /// assert_eq!(ca.issue("api-1").unwrap().node_id().as_deref(), Some("api-1"));
    /// ```
    pub fn node_id(&self) -> Option<String> {
        certified(self.chain.first()?.as_ref()).node_id
    }

    /// Number of certificates in this node's chain.
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots.add(ca.clone())?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    pub(crate) fn server_crypto(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    pub(crate) fn client_crypto(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// A development certificate authority: makes a cluster CA and node
/// certificates signed by it. For tests, demos and `hydracache-node certs`;
/// production deployments bring their own CA and use
/// [`TlsConfig::from_pem_files`].
///
/// ```
/// use hydracache::cluster::DevCa;
/// let ca = DevCa::new("orders").unwrap();
/// let node = ca.issue_pem("api-1").unwrap();
/// assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// let tls = hydracache::cluster::TlsConfig::from_pem(
///     ca.ca_pem().as_bytes(), node.cert_pem.as_bytes(), node.key_pem.as_bytes()).unwrap();
/// # let _ = tls;
/// ```
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A node certificate and its key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct NodeCertPem {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl DevCa {
    /// A new CA named after the cluster.
    pub fn new(cluster: &str) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("HydraCache cluster CA {cluster}"),
        );
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    /// The CA certificate, PEM-encoded (the bundle every node trusts).
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A member certificate for `node_id`, signed by this CA: it grants
    /// the member role (and the client role).
    pub fn issue_pem(&self, node_id: &str) -> Result<NodeCertPem, TlsError> {
        self.issue_pem_as(node_id, Role::Member)
    }

    /// A certificate for `node_id` granting `role`, signed by this CA: a
    /// [`Role::Client`] certificate cannot join as a member.
    ///
    /// ```
    /// use hydracache::cluster::DevCa;
    /// use hydracache_protocol::Role;
    /// let ca = DevCa::new("orders").unwrap();
    /// let web = ca.issue_pem_as("web-1", Role::Client).unwrap();
    /// assert!(web.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    /// ```
    pub fn issue_pem_as(&self, node_id: &str, role: Role) -> Result<NodeCertPem, TlsError> {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .subject_alt_names
            .push(SanType::URI(role_uri(role).try_into()?));
        params.distinguished_name.push(DnType::CommonName, node_id);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCertPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A ready [`TlsConfig`] for the member `node_id`.
    pub fn issue(&self, node_id: &str) -> Result<TlsConfig, TlsError> {
        self.issue_as(node_id, Role::Member)
    }

    /// A ready [`TlsConfig`] for `node_id` in `role`.
    pub fn issue_as(&self, node_id: &str, role: Role) -> Result<TlsConfig, TlsError> {
        let node = self.issue_pem_as(node_id, role)?;
        TlsConfig::from_pem(
            self.ca_pem().as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
        )
    }

    /// Writes `ca.pem` and `<node>.pem` / `<node>.key` for every member
    /// into `dir`.
    pub fn write_files(&self, dir: impl AsRef<Path>, nodes: &[&str]) -> Result<(), TlsError> {
        let nodes: Vec<(&str, Role)> = nodes.iter().map(|n| (*n, Role::Member)).collect();
        self.write_files_as(dir, &nodes)
    }

    /// Writes `ca.pem` and `<node>.pem` / `<node>.key` for every node, in
    /// its role, into `dir`.
    pub fn write_files_as(
        &self,
        dir: impl AsRef<Path>,
        nodes: &[(&str, Role)],
    ) -> Result<(), TlsError> {
        let dir = dir.as_ref();
        let write = |name: String, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        write("ca.pem".into(), &self.ca_pem())?;
        for &(node, role) in nodes {
            let pem = self.issue_pem_as(node, role)?;
            write(format!("{node}.pem"), &pem.cert_pem)?;
            write(format!("{node}.key"), &pem.key_pem)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn dev_certificates_carry_their_node_id_and_role() {
        let ca = DevCa::new("orders").unwrap();
        let member = certified(&der(&ca.issue_pem("m1").unwrap().cert_pem));
        assert_eq!(member.node_id.as_deref(), Some("m1"));
        assert_eq!(member.role, Some(Role::Member));
        let client = certified(&der(&ca.issue_pem_as("c1", Role::Client).unwrap().cert_pem));
        assert_eq!(client.node_id.as_deref(), Some("c1"));
        assert_eq!(client.role, Some(Role::Client));
    }

    #[test]
    fn a_certificate_without_a_role_uri_grants_no_role() {
        let ca = DevCa::new("orders").unwrap();
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "x");
        let cert = params
            .signed_by(&KeyPair::generate().unwrap(), &ca.issuer)
            .unwrap();
        let seen = certified(cert.der());
        assert_eq!(seen.node_id.as_deref(), Some("x"));
        assert_eq!(seen.role, None);
        assert_eq!(certified(b"not a certificate"), Default::default());
    }
}
