//! HTTPS for the fakes: a private CA made per test (rcgen), a certificate for `localhost` and
//! `127.0.0.1` signed by it, and an axum server behind rustls. A process under test trusts the CA
//! only through `SSL_CERT_FILE`, as a deployment with a private CA would.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A private CA and a server certificate it signed.
pub struct TestCa {
    /// The CA certificate, PEM (what `SSL_CERT_FILE` points at).
    pub ca_pem: String,
    /// A file holding [`TestCa::ca_pem`].
    pub ca_file: tempfile::NamedTempFile,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestCa {
    /// A new CA and a certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "stripe-ledger test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server_cert = params.signed_by(&server_key, &ca).expect("server cert");

        let ca_pem = ca.pem();
        let mut ca_file = tempfile::NamedTempFile::new().expect("CA file");
        ca_file.write_all(ca_pem.as_bytes()).expect("write CA");
        Self { ca_pem, ca_file, server_cert: server_cert.der().clone(), server_key: server_key.serialize_der() }
    }

    /// Path of the CA file.
    pub fn ca_path(&self) -> String {
        self.ca_file.path().display().to_string()
    }

    /// Serves `app` over HTTPS on 127.0.0.1:0; returns the address.
    pub async fn serve(&self, app: Router) -> SocketAddr {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .expect("server TLS config");
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let listener = TlsListener { inner, acceptor: TlsAcceptor::from(Arc::new(config)) };
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP listener that completes a TLS handshake before handing the connection to axum. A failed
/// handshake (a client that does not trust the CA) is dropped and the next connection accepted.
struct TlsListener {
    inner: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else { continue };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
