//! Test certificates for TLS servers: one CA and one server certificate (for `localhost` / `127.0.0.1`) per
//! process, made with `rcgen` and written as PEM files into each TLS server's own dir.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use crate::Error;

/// File name of the CA certificate in a TLS server's dir.
pub(crate) const CA_FILE: &str = "tls-ca.pem";
/// File name of the server certificate in a TLS server's dir.
pub(crate) const CERT_FILE: &str = "tls-server.pem";
/// File name of the server key in a TLS server's dir.
pub(crate) const KEY_FILE: &str = "tls-server.key";

/// PEM texts of the process-wide CA and server certificate.
struct Pems {
    ca: String,
    cert: String,
    key: String,
}

fn generate() -> Result<Pems, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferry-testkit CA");
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(err)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    Ok(Pems {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn pems() -> Result<&'static Pems, Error> {
    static PEMS: OnceLock<Result<Pems, String>> = OnceLock::new();
    PEMS.get_or_init(generate)
        .as_ref()
        .map_err(|e| Error::InvalidArgument(format!("generating test TLS certificates: {e}")))
}

/// Writes the CA, the server certificate and its key into `dir`.
pub(crate) fn write_certs(dir: &Path) -> Result<(), Error> {
    let p = pems()?;
    for (name, text) in [(CA_FILE, &p.ca), (CERT_FILE, &p.cert), (KEY_FILE, &p.key)] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}
