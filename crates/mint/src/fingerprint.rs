//! Fingerprints people compare by eye: `SHA256:<base64>` of an SSH key as `ssh-keygen -l`
//! prints it, and `SHA256:AB:CD:...` of an X.509 certificate as `openssl x509 -fingerprint`
//! prints it. Depends on no other module of this crate but its error type.

use crate::MintError;

/// `SHA256:<base64>` fingerprint of an OpenSSH public key line, as `ssh-keygen -l` prints it.
/// A certificate line gives the fingerprint of the certified key, as `ssh-keygen -l` does.
pub fn ssh_fingerprint(openssh_line: &str) -> Result<String, MintError> {
    let line = openssh_line.trim();
    let data = match ssh_key::PublicKey::from_openssh(line) {
        Ok(key) => key.key_data().clone(),
        Err(key_err) => match ssh_key::Certificate::from_openssh(line) {
            Ok(cert) => cert.public_key().clone(),
            Err(_) => {
                return Err(MintError::InvalidPublicKey(format!(
                    "openssh public key line: {key_err}"
                )));
            }
        },
    };
    Ok(data.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}

/// `SHA256:AB:CD:...` over a certificate's DER (the bytes as given, not parsed), as
/// `openssl x509 -noout -fingerprint -sha256` prints it.
pub fn cert_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let pairs: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", pairs.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_fingerprint_is_openssl_shaped() {
        // SHA-256 of no bytes.
        assert_eq!(
            cert_fingerprint(b""),
            "SHA256:E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn ssh_fingerprint_refuses_garbage() {
        assert!(matches!(
            ssh_fingerprint("ssh-ed25519 !!!"),
            Err(MintError::InvalidPublicKey(_))
        ));
    }
}
