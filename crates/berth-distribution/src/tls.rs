//! TLS for registries: rustls with the ring provider, the system's roots
//! (through rustls-platform-verifier) plus a registry's own CAs, an
//! optional client certificate, or no verification at all for registries
//! the daemon configuration marks insecure.

use std::path::Path;
use std::sync::Arc;

use berth_types::{Error, Result};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Install ring as the process's rustls provider; call once at startup
/// (a second call is harmless).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// What a registry's certs.d directory holds.
#[derive(Default)]
pub(crate) struct HostCerts {
    pub cas: Vec<CertificateDer<'static>>,
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Read `<dir>/*.crt` as CAs and `<dir>/*.cert` + matching `*.key` as the
/// client certificate, as Docker does. A missing directory is no error.
pub(crate) fn read_host_certs(dir: &Path) -> Result<HostCerts> {
    let mut out = HostCerts::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".crt") {
            for c in CertificateDer::pem_file_iter(&p)
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?
            {
                out.cas
                    .push(c.map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?);
            }
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = p.with_file_name(format!("{stem}.key"));
            if !key.exists() {
                return Err(Error::invalid(format!(
                    "missing key {} for client certificate {}",
                    key.display(),
                    p.display()
                )));
            }
            let certs = CertificateDer::pem_file_iter(&p)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?;
            let k = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| Error::invalid(format!("{}: {e}", key.display())))?;
            out.client = Some((certs, k));
        } else if let Some(stem) = name.strip_suffix(".key")
            && !p.with_file_name(format!("{stem}.cert")).exists()
        {
            return Err(Error::invalid(format!(
                "missing client certificate {stem}.cert for key {}",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// A rustls client configuration for one registry host.
pub(crate) fn client_config(certs: HostCerts, skip_verify: bool) -> Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("tls: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if skip_verify {
        Arc::new(NoVerify(provider.clone()))
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(certs.cas, provider)
                .map_err(|e| Error::internal(format!("tls: system roots: {e}")))?,
        )
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match certs.client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::invalid(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts any server certificate: only for registries configured as
/// insecure, where Docker skips verification too.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
