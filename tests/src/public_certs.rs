//! Certificates for the edge's public HTTPS listener: a CA the test trusts
//! (its `ca.pem` goes to `curl --cacert`) and leaf certificates it signs,
//! written as the `NAME.pem` + `NAME-key.pem` pairs `--public-cert-dir`
//! reads.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A throw-away public CA.
pub struct PublicCa {
    /// Its certificate, for clients to trust.
    pub ca_pem: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl PublicCa {
    /// Makes the CA and writes its certificate to `dir/public-ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Warren test public CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-sign the CA");
        std::fs::create_dir_all(dir).expect("create the CA folder");
        let ca_pem = dir.join("public-ca.pem");
        std::fs::write(&ca_pem, issuer.pem()).expect("write the CA");
        Self { ca_pem, issuer }
    }

    /// Signs a leaf for `names` (its DNS SANs) and writes `dir/STEM.pem`
    /// and `dir/STEM-key.pem`, the key first so the edge never sees a chain
    /// without its key. Returns the certificate's SHA-256 fingerprint as
    /// `openssl x509 -fingerprint -sha256` prints it (`AB:CD:...`).
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem())
            .expect("write the key");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write the chain");
        fingerprint(cert.der())
    }
}

/// `AB:CD:...`, the SHA-256 of a DER certificate as openssl prints it.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A TLS connection to the edge's HTTPS listener at `addr`, trusting only
/// the CA in `ca_pem`, with SNI `host` and the given ALPN protocol.
pub async fn connect(
    ca_pem: &Path,
    addr: std::net::SocketAddr,
    host: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let pem = std::fs::read(ca_pem).expect("read the public CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the edge's HTTPS listener");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            ServerName::try_from(host.to_string()).expect("a DNS name"),
            tcp,
        )
        .await
        .expect("TLS handshake with the edge")
}
