//! `--tls`: a throw-away CA and a leaf certificate for 127.0.0.1/localhost (rcgen), the CA
//! written to `DATA_DIR/ca.pem` for clients to trust, and the rustls server config. The CA key
//! is kept in `DATA_DIR/ca-key.pem` (0600) so a sandbox restarted on the same data dir signs
//! with the same CA and clients that trust `ca.pem` keep trusting it.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn setup(data_dir: &Path) -> anyhow::Result<(Arc<rustls::ServerConfig>, PathBuf)> {
    // Another part of the process may have installed it already; either way ring is there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_path = data_dir.join("ca.pem");
    let key_path = data_dir.join("ca-key.pem");
    let kept = match (std::fs::read_to_string(&key_path), ca_path.exists()) {
        (Ok(pem), true) => KeyPair::from_pem(&pem).ok(),
        _ => None,
    };
    let reuse = kept.is_some();
    let ca_key = match kept {
        Some(k) => k,
        None => KeyPair::generate()?,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "outbox sandbox throw-away CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;

    // Same key and same name: leaves signed now verify against the `ca.pem` written before.
    if !reuse {
        std::fs::write(&ca_path, ca.pem())?;
        write_private(&key_path, &ca_key.serialize_pem())?;
    }
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ca_path))
}

/// Write a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(text.as_bytes())
}
