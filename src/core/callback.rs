//! Callback tokens: an HMAC-SHA256 over the run, the wait and the wait's
//! expiry, so a callback URL cannot be guessed, moved to another run or wait,
//! or stretched past its expiry. Verification is constant-time and accepts a
//! list of secrets so that a previous secret keeps working during rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"arcrun-callback-v1";
/// Longest token accepted before any work is done on it.
const MAX_TOKEN_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    BadSignature,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "the callback URL has no token",
            Self::Malformed => "the callback token is malformed",
            Self::BadSignature => "the callback token is not valid for this run and wait",
        }
    }
}

fn mac(secret: &[u8], run_id: &str, wait_id: &str, expires_at: u64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    // Length-prefix the variable fields so no two (run, wait) pairs collide.
    for field in [DOMAIN, run_id.as_bytes(), wait_id.as_bytes()] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    mac.update(&expires_at.to_be_bytes());
    mac
}

/// `"<expires_at>.<base64url mac>"`.
pub fn sign(secret: &[u8], run_id: &str, wait_id: &str, expires_at: u64) -> String {
    let tag = mac(secret, run_id, wait_id, expires_at)
        .finalize()
        .into_bytes();
    format!("{expires_at}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks a token against each secret in turn; returns the expiry it carries.
pub fn verify(
    secrets: &[&[u8]],
    run_id: &str,
    wait_id: &str,
    token: Option<&str>,
) -> Result<u64, TokenError> {
    let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (exp, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    // Only the spelling `sign` writes: digits, no leading zero, so that a
    // token has exactly one accepted text.
    if exp.is_empty()
        || !exp.bytes().all(|b| b.is_ascii_digit())
        || (exp.len() > 1 && exp.starts_with('0'))
    {
        return Err(TokenError::Malformed);
    }
    let expires_at: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    if tag.len() != 32 {
        return Err(TokenError::Malformed);
    }
    let valid = secrets.iter().any(|secret| {
        mac(secret, run_id, wait_id, expires_at)
            .verify_slice(&tag)
            .is_ok()
    });
    if valid {
        Ok(expires_at)
    } else {
        Err(TokenError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let t = sign(b"k1", "run-a", "w1", 1000);
        assert_eq!(verify(&[b"k1"], "run-a", "w1", Some(&t)), Ok(1000));
        assert_eq!(
            verify(&[b"k2"], "run-a", "w1", Some(&t)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&[b"k1"], "run-b", "w1", Some(&t)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&[b"k1"], "run-a", "w2", Some(&t)),
            Err(TokenError::BadSignature)
        );
        let stretched = t.replacen("1000.", "9999.", 1);
        assert_eq!(
            verify(&[b"k1"], "run-a", "w1", Some(&stretched)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rotation_accepts_previous_secret() {
        let t = sign(b"old", "r", "w", 5);
        assert_eq!(verify(&[b"new", b"old"], "r", "w", Some(&t)), Ok(5));
    }

    #[test]
    fn only_the_signed_spelling_verifies() {
        // Found by fuzzing: a zero-padded expiry parsed to the same number and
        // verified, so one token had many accepted spellings.
        let t = sign(b"k", "r", "w", 196_607);
        for padded in [format!("0{t}"), format!("000{t}")] {
            assert_eq!(
                verify(&[b"k"], "r", "w", Some(&padded)),
                Err(TokenError::Malformed),
                "{padded}"
            );
        }
        let zero = sign(b"k", "r", "w", 0);
        assert!(zero.starts_with("0."));
        assert_eq!(verify(&[b"k"], "r", "w", Some(&zero)), Ok(0));
        assert_eq!(
            verify(&[b"k"], "r", "w", Some(&format!("0{zero}"))),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            "x",
            "1.",
            ".abc",
            "-1.abc",
            "12.!!!",
            "12.YWJj",
            &"9".repeat(200),
        ] {
            assert_eq!(
                verify(&[b"k"], "r", "w", Some(bad)),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(verify(&[b"k"], "r", "w", None), Err(TokenError::Missing));
        assert_eq!(
            verify(&[b"k"], "r", "w", Some("")),
            Err(TokenError::Missing)
        );
    }
}
