//! QUIC endpoint builders shared by the edge and the connector: TLS 1.3 only,
//! ring as the crypto provider, the protocol version in the ALPN, and the
//! transport limits both sides rely on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::ALPN;

/// How often an idle connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A connection that hears nothing for this long is dead. Short, so a
/// connector notices a killed edge within seconds and moves away.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many request streams an edge may have open on one connection.
pub const MAX_REQUEST_STREAMS: u32 = 1024;
/// Streams a connector may open to the edge once registered: it opens only
/// the control stream; the edge opens the rest.
pub const REGISTERED_CONNECTOR_STREAMS: u32 = 4;
/// What a connection may make its peer buffer in all (stream data not read
/// yet), once registered.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 16 << 20;
/// What a connection that has not registered may make the edge buffer: one
/// whole control frame (a registration is far smaller), no more.
pub const PENDING_RECEIVE_WINDOW: u32 =
    (crate::codec::MAX_PAYLOAD + crate::codec::HEADER_LEN) as u32;

/// Why an endpoint could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A certificate or key file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// Certificate, key, or CA.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificates {
        /// The file.
        path: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration is not usable for QUIC.
    #[error("TLS configuration not usable for QUIC: {0}")]
    Quic(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, EndpointError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| EndpointError::Pem {
            what: "certificates",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(EndpointError::NoCertificates {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, EndpointError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| EndpointError::Pem {
        what: "private key",
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The edge's QUIC server configuration.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, EndpointError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = base_transport();
    // Until it registers, a connection is anybody's: one stream (the
    // control stream) and a window of one frame. [`open_registered`]
    // raises both once the registration succeeds.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.receive_window(VarInt::from_u32(PENDING_RECEIVE_WINDOW));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Gives a connection that just registered on the edge the streams and the
/// receive window of a trusted one.
pub fn open_registered(conn: &quinn::Connection) {
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(REGISTERED_CONNECTOR_STREAMS));
    conn.set_receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW));
}

/// How the connector decides to trust an edge's certificate.
#[derive(Debug, Clone)]
pub enum EdgeTrust {
    /// Certificates signed by these CAs, for the edge's name.
    Ca(Vec<CertificateDer<'static>>),
    /// Any certificate at all. Only for local experiments: it makes the
    /// tunnel open to interception.
    DangerAcceptAnyCertificate,
}

/// The connector's QUIC client configuration.
pub fn client_config(trust: EdgeTrust) -> Result<quinn::ClientConfig, EndpointError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        EdgeTrust::Ca(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots.add(ca)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        EdgeTrust::DangerAcceptAnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = base_transport();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(MAX_REQUEST_STREAMS));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Binds a server endpoint (the edge's tunnel listener).
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
) -> Result<quinn::Endpoint, EndpointError> {
    quinn::Endpoint::server(config, addr).map_err(|source| EndpointError::Bind { addr, source })
}

/// A server endpoint on a socket bound elsewhere (by the edge's
/// supervisor), issuing connection IDs from `cid_generator` when given.
pub fn server_endpoint_on(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    cid_generator: Option<Arc<CidGeneratorFactory>>,
) -> Result<quinn::Endpoint, EndpointError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut endpoint_config = quinn::EndpointConfig::default();
    if let Some(factory) = cid_generator {
        endpoint_config.cid_generator(move || factory());
    }
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
        .map_err(|source| EndpointError::Bind { addr, source })
}

/// Makes the connection ID generator of each endpoint.
pub type CidGeneratorFactory = dyn Fn() -> Box<dyn quinn::ConnectionIdGenerator> + Send + Sync;

/// Binds a client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(
    config: quinn::ClientConfig,
    ipv6: bool,
) -> Result<quinn::Endpoint, EndpointError> {
    let addr: SocketAddr = if ipv6 {
        "[::]:0".parse().expect("valid literal")
    } else {
        "0.0.0.0:0".parse().expect("valid literal")
    };
    let mut endpoint =
        quinn::Endpoint::client(addr).map_err(|source| EndpointError::Bind { addr, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

fn base_transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(IDLE_TIMEOUT).expect("5 s fits a QUIC idle timeout"),
    ));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Bound what one connection can make us buffer: 1 MiB per stream and
    // 16 MiB in all, plenty for loopback and data-center round trips.
    t.stream_receive_window(VarInt::from_u32(1 << 20));
    t.receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW));
    t.send_window(8 << 20);
    // Ask the peer to acknowledge every 10th packet instead of every 2nd
    // (the QUIC ACK frequency extension; both ends are quinn). Responses
    // carry the ACK of their request along anyway, so the ACK-only packets
    // of the default were pure cost: on one keep-alive connection they made
    // 2.75 UDP datagrams per request, 2.2 without them. A packet out of order
    // is still acknowledged at once, and the peer's max_ack_delay still
    // bounds how late an ACK comes.
    let mut ack = AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(ack));
    t
}

/// How many packets the peer may take in before it must acknowledge them.
const ACK_ELICITING_THRESHOLD: u32 = 9;

/// A verifier that accepts any certificate but still checks that the peer
/// holds the certificate's key (so the handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
