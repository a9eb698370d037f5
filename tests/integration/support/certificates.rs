//! Self-signed certificates for TLS tests, with the `kubernetes.io/tls` Secret that carries
//! them, as a user would write it.

use rustls::pki_types::CertificateDer;

pub struct TestCert {
    pub der: CertificateDer<'static>,
    /// The certificate as PEM, for clients that take a CA file.
    pub pem: String,
    /// A Secret `default/SECRET` holding the certificate and its key.
    pub secret_yaml: String,
}

/// A self-signed certificate for `host` (a name or a wildcard), in a Secret named `secret`.
pub fn certificate(host: &str, secret: &str) -> TestCert {
    let generated =
        rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("generate cert");
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let secret_yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(generated.cert.pem()),
        indent(generated.signing_key.serialize_pem()),
    );
    TestCert {
        der: generated.cert.der().clone(),
        pem: generated.cert.pem(),
        secret_yaml,
    }
}
