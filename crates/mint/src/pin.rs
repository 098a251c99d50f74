//! CA pins: `sha256:<hex>` over a CA certificate's DER SubjectPublicKeyInfo.

use crate::MintError;
use subtle::ConstantTimeEq;

/// `sha256:<hex>` over a CA certificate's DER SubjectPublicKeyInfo.
///
/// Parsing accepts upper- or lower-case hex; [`Display`](std::fmt::Display) writes lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPin {
    digest: [u8; 32],
}

impl CaPin {
    /// The pin of a CA certificate (DER).
    pub fn from_cert_der(der: &[u8]) -> Result<Self, MintError> {
        let spki = crate::x509::spki_of_cert(der)?;
        Ok(Self::from_spki_der(&spki))
    }

    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        Self { digest }
    }

    /// Reads `sha256:<64 hex digits>`.
    pub fn parse(s: &str) -> Result<Self, MintError> {
        let bad = |reason: String| MintError::InvalidCaPin {
            pin: s.to_owned(),
            reason,
        };
        let (alg, hex_part) =
            s.trim().split_once(':').ok_or_else(|| {
                bad("expected algorithm:pin, e.g. sha256:<64 hex digits> as `tctl status` prints it"
                .into())
            })?;
        if alg != "sha256" {
            return Err(bad(format!(
                "unsupported algorithm {alg:?}: only sha256 is supported"
            )));
        }
        if hex_part.len() != 64 {
            return Err(bad(format!(
                "the sha256 pin must be 64 hex digits, got {}",
                hex_part.len()
            )));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut digest)
            .map_err(|e| bad(format!("the pin is not hex: {e}")))?;
        Ok(Self { digest })
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &CaPin) -> bool {
        self.digest.ct_eq(&other.digest).into()
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.digest))
    }
}

impl std::str::FromStr for CaPin {
    type Err = MintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let hex = "ab".repeat(32);
        let pin = CaPin::parse(&format!("sha256:{hex}")).expect("parse");
        assert_eq!(pin.to_string(), format!("sha256:{hex}"));
        let upper = CaPin::parse(&format!("sha256:{}", hex.to_uppercase())).expect("upper");
        assert!(pin.matches(&upper));
        assert!(!pin.matches(&CaPin::parse(&format!("sha256:{}", "ac".repeat(32))).expect("p")));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = CaPin::parse("abcdef").expect_err("no colon").to_string();
        assert!(e.contains("expected algorithm:pin"), "{e}");
        let e = CaPin::parse(&format!("sha1:{}", "ab".repeat(32)))
            .expect_err("sha1")
            .to_string();
        assert!(e.contains("only sha256 is supported"), "{e}");
        let e = CaPin::parse("sha256:abcd").expect_err("short").to_string();
        assert!(e.contains("64 hex"), "{e}");
        let e = CaPin::parse(&format!("sha256:{}", "zz".repeat(32)))
            .expect_err("not hex")
            .to_string();
        assert!(e.contains("not hex"), "{e}");
    }
}
