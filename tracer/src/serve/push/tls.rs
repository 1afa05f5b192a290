//! `--push https://...`: the TLS client (rustls with the `ring` provider). It trusts the host's
//! CA store (`rustls-native-certs`: /etc/ssl/certs, or `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus the
//! CA certificates of `TRACER_PUSH_CA`, checks the certificate against the URL's host, and turns
//! a refused certificate into a message that says what to do.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::PushTarget;
use crate::error::user_error;

use super::Failure;

/// The TLS side of one push target: its trust roots and the server name to verify.
pub struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// The host, for messages.
    host: String,
}

impl Tls {
    /// The client for `target` (None for `http://`), built before any probe attaches so that an
    /// unreadable `TRACER_PUSH_CA` is an `error:` + `hint:` at startup.
    pub fn for_target(target: &PushTarget) -> Result<Option<Tls>> {
        if !target.tls {
            if target.ca_file.is_some() {
                log::warn!("TRACER_PUSH_CA is set but --push is http://: the CA is not used");
            }
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            log::debug!("push: the host's CA store: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        log::debug!("push: {added} CA certificates from the host's store ({ignored} unparsable)");
        if let Some(path) = &target.ca_file {
            for cert in read_ca_file(path)? {
                roots.add(cert).map_err(|e| {
                    user_error(
                        format!("TRACER_PUSH_CA={}: a certificate is not usable as a CA: {e}", path.display()),
                        "give the PEM file of the CA that signed the push server's certificate",
                    )
                })?;
            }
        }
        if roots.is_empty() {
            log::warn!(
                "no CA certificates found on this host (install ca-certificates, or set SSL_CERT_FILE); \
                 pushes to {} will fail unless TRACER_PUSH_CA names the server's CA",
                target.ingest_url()
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(target.server_name.clone()).map_err(|e| {
            user_error(format!("--push {}: {e}", target.ingest_url()), "give a host name or an IP address")
        })?;
        Ok(Some(Tls { connector: TlsConnector::from(Arc::new(config)), server_name, host: target.server_name.clone() }))
    }

    /// The TLS handshake over a connected socket.
    pub(super) async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, Failure> {
        self.connector.connect(self.server_name.clone(), tcp).await.map_err(|e| explain(&self.host, e))
    }
}

/// The certificates of a PEM file; an `error:` + `hint:` if there are none.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let hint = "give the PEM file (-----BEGIN CERTIFICATE-----) of the CA that signed the push server's certificate";
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| user_error(format!("TRACER_PUSH_CA={shown}: {e}"), hint))?;
    if certs.is_empty() {
        return Err(user_error(format!("TRACER_PUSH_CA={shown} holds no PEM certificate"), hint));
    }
    Ok(certs)
}

/// A failed handshake with `host`, with a hint when the certificate was refused. A refused
/// certificate is not retried: it will be refused again until someone changes something.
fn explain(host: &str, e: std::io::Error) -> Failure {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        let error = anyhow::Error::new(e).context(format!("TLS handshake with {host}"));
        return Failure { error, retry: true };
    };
    let hint = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "its CA is not one this host trusts; to trust a private CA, set TRACER_PUSH_CA=/path/to/ca.pem"
                    .to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not issued for {host}; push to a name it carries")
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the certificate is outside its validity dates: renew it, or check this host's clock".to_string()
            }
            _ => "the server's certificate was refused; set TRACER_PUSH_CA=/path/to/ca.pem if a private CA signed it"
                .to_string(),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "is the server speaking https on that port? For plain HTTP, push to http://".to_string()
        }
        _ => String::new(),
    };
    let retry = !matches!(tls, rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidMessage(_));
    let error = if hint.is_empty() {
        anyhow::anyhow!("TLS handshake with {host}: {tls}")
    } else {
        anyhow::anyhow!("TLS handshake with {host}: {tls} (hint: {hint})")
    };
    Failure { error, retry }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(e: rustls::Error) -> (String, bool) {
        let h = explain("pyroscope.example.com", std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        (format!("{:#}", h.error), h.retry)
    }

    #[test]
    fn refused_certificates_name_the_host_and_the_fix() {
        let (text, retry) = explained(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(text.contains("pyroscope.example.com") && text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("set TRACER_PUSH_CA="), "{text}");
        assert!(!retry, "a refused certificate is refused again");
        let (text, _) = explained(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        assert!(text.contains("not issued for pyroscope.example.com"), "{text}");
        let (text, _) = explained(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert!(text.contains("clock"), "{text}");
        let plain = explain("h", std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(plain.retry && format!("{:#}", plain.error).starts_with("TLS handshake with h: "));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [empty, dir.path().join("missing.pem")] {
            let e = read_ca_file(&path).unwrap_err();
            let u = e.downcast_ref::<crate::error::UserError>().unwrap();
            assert!(u.message.starts_with("TRACER_PUSH_CA=") && u.hint.contains("PEM"), "{} / {}", u.message, u.hint);
        }
        let mut target = PushTarget::parse("https://127.0.0.1:8443").unwrap();
        assert!(Tls::for_target(&target).unwrap().is_some());
        target.ca_file = Some(dir.path().join("missing.pem"));
        assert!(Tls::for_target(&target).is_err());
        assert!(Tls::for_target(&PushTarget::parse("http://127.0.0.1:8080").unwrap()).unwrap().is_none());
    }

    /// A TLS server on loopback whose certificate (for 127.0.0.1) a CA made here signed; the
    /// CA's PEM is written to `dir/ca.pem`. Answers one handshake per connection.
    async fn private_server(dir: &Path) -> std::net::SocketAddr {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        addr
    }

    async fn handshake(url: &str, ca_file: Option<&Path>, addr: std::net::SocketAddr) -> Result<(), Failure> {
        let mut target = PushTarget::parse(url).unwrap();
        target.ca_file = ca_file.map(Path::to_path_buf);
        let tls = Tls::for_target(&target).unwrap().unwrap();
        tls.handshake(TcpStream::connect(addr).await.unwrap()).await.map(drop)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn handshakes_trust_the_private_ca_and_check_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let addr = private_server(dir.path()).await;
        let ca = dir.path().join("ca.pem");
        let url = format!("https://{addr}");
        assert!(handshake(&url, Some(&ca), addr).await.is_ok(), "the private CA is trusted");
        let refused = handshake(&url, None, addr).await.unwrap_err();
        let text = format!("{:#}", refused.error);
        assert!(text.contains("UnknownIssuer") && text.contains("TRACER_PUSH_CA") && !refused.retry, "{text}");
        // The same server reached under a name its certificate does not carry.
        let refused = handshake(&format!("https://localhost:{}", addr.port()), Some(&ca), addr).await.unwrap_err();
        let text = format!("{:#}", refused.error);
        assert!(text.contains("not issued for localhost"), "{text}");
    }
}
