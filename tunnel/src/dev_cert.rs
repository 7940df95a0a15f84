//! Certificates for local use: a throw-away CA and an edge certificate it
//! signs, so a local fleet can run with verification on rather than off.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA certificate and an edge certificate and key signed by it, in PEM.
#[derive(Clone)]
pub struct DevCerts {
    /// The CA certificate connectors trust.
    pub ca_pem: String,
    /// The edge certificate.
    pub cert_pem: String,
    /// The edge private key.
    pub key_pem: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCerts { key_pem: *** }")
    }
}

/// Makes a CA and an edge certificate valid for `localhost`, `127.0.0.1`
/// and every name in `sans` (DNS names or IP addresses).
pub fn generate(sans: &[String]) -> Result<DevCerts, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Warren local development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for san in sans {
        if !names.contains(san) {
            names.push(san.clone());
        }
    }
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "Warren edge");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
    Ok(DevCerts {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}
