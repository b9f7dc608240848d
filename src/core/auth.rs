//! API keys. The deployment holds only SHA-256 hashes of its keys; a presented
//! key is hashed and compared in constant time. A run's owner is the hash of
//! the key that started it, so the plain key is never stored either.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type KeyHash = [u8; 32];

/// Parses `API_KEY_HASHES`: hex SHA-256 digests separated by commas or whitespace.
pub fn parse_key_hashes(text: &str) -> Result<Vec<KeyHash>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|hex| {
            let bytes = decode_hex(hex).filter(|b| b.len() == 32).ok_or_else(|| {
                format!("API_KEY_HASHES entry '{hex:.12}…' is not a 64-digit hex SHA-256")
            })?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes);
            Ok(hash)
        })
        .collect()
}

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// The owner id for a presented key, if it is one of the configured keys.
/// Every configured hash is compared, so timing does not reveal which matched.
pub fn owner_of(key: &str, configured: &[KeyHash]) -> Option<String> {
    let presented = hash_key(key);
    let mut found = subtle::Choice::from(0);
    for hash in configured {
        found |= presented.ct_eq(hash);
    }
    bool::from(found).then(|| encode_hex(&presented))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex of `bytes`: owner ids, task index keys, request hashes.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_hash_only() {
        let hashes = parse_key_hashes(
            "61e6c2936fbaef87222b97c058baac3cb753e68dd6362842f7d59569c3b9ec38, \n 62af8704764faf8ea82fc61ce9c4c3908b6cb97d463a634e9e587d7c885db0ef",
        )
        .unwrap();
        assert_eq!(hashes.len(), 2);
        let dev = owner_of("dev-key-local-only", &hashes).unwrap();
        let test = owner_of("test-key", &hashes).unwrap();
        assert_ne!(dev, test);
        assert_eq!(dev.len(), 64);
        assert_eq!(owner_of("dev-key-local-onlY", &hashes), None);
        assert_eq!(owner_of("", &hashes), None);
        assert_eq!(owner_of("test-key", &[]), None);
    }

    #[test]
    fn bad_hash_lists_are_rejected() {
        assert!(parse_key_hashes("abc").is_err());
        assert!(parse_key_hashes(&"zz".repeat(32)).is_err());
        assert!(parse_key_hashes("").unwrap().is_empty());
        assert!(parse_key_hashes("é".repeat(32).as_str()).is_err());
    }
}
