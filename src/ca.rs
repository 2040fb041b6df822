//! `graph.ca_file`: the extra trusted roots (a TLS-inspecting proxy's, the sandbox's `--tls` CA).
//! One loader for the Graph client and the identity-platform client, so both trust the same
//! roots and refuse the same broken files. Never decides anything about which hosts to trust.

use std::path::Path;

/// Read every certificate in the PEM bundle at `path`, for `ClientBuilder::add_root_certificate`.
/// A file that cannot be read, is not PEM, or holds no certificate is an error naming the file.
pub fn load_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("graph.ca_file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "graph.ca_file {}: not a PEM certificate: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "graph.ca_file {}: no certificate in the file (a PEM file with \
             -----BEGIN CERTIFICATE----- blocks is needed)",
            path.display()
        ));
    }
    Ok(certs)
}
