//! Secrets kept at rest (organisations' judge keys): sealed with AES-256-GCM
//! under the key the operator supplies in `[encryption]`, and HMAC-SHA256
//! for webhook signatures, both from `ring` (the TLS stack's own crypto).
//!
//! A sealed value is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, with
//! associated data naming what it belongs to (the organisation and the
//! provider), so a value copied to another row does not open. The key's
//! id, the first 8 bytes of its SHA-256 in hex, is kept beside each value,
//! so one sealed under another key is recognised as such.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The encryption key's length: 32 bytes, AES-256.
pub const KEY_LEN: usize = 32;

/// Seals and opens secrets under the operator's key.
pub struct SecretBox {
    key: LessSafeKey,
    id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox").field("id", &self.id).finish()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it was sealed with another encryption key (id {0}); set it again")]
    OtherKey(String),
    #[error("it does not open with the encryption key: it was altered or copied from elsewhere")]
    Corrupt,
}

impl SecretBox {
    /// A box over 32 key bytes.
    pub fn new(key: &[u8; KEY_LEN]) -> SecretBox {
        let id = hex::encode(&Sha256::digest(key)[..8]);
        // AES-256-GCM takes any 32 bytes, so this cannot fail.
        let unbound = match UnboundKey::new(&AES_256_GCM, key) {
            Ok(unbound) => unbound,
            Err(_) => unreachable!("AES-256-GCM takes every 32-byte key"),
        };
        SecretBox {
            key: LessSafeKey::new(unbound),
            id,
            rng: SystemRandom::new(),
        }
    }

    /// The key as the operator writes it: 32 bytes in base64 (`openssl rand
    /// -base64 32`) or hex (`openssl rand -hex 32`), surrounding whitespace
    /// ignored.
    pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN], String> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    "must be 32 bytes in base64 or hex, e.g. the output of `openssl rand -base64 32`"
                        .to_string()
                })?
        };
        <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            format!(
                "must be 32 bytes (AES-256), not {}; e.g. the output of `openssl rand -base64 32`",
                bytes.len()
            )
        })
    }

    /// The key's id, kept beside what it seals.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// `plaintext` sealed, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_string())?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// What `seal` sealed, when `key_id` is this box's and `context` the same.
    pub fn open(&self, sealed: &[u8], key_id: &str, context: &str) -> Result<Vec<u8>, OpenError> {
        if key_id != self.id {
            return Err(OpenError::OtherKey(key_id.to_string()));
        }
        if sealed.len() < NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Corrupt)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| OpenError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(byte: u8) -> SecretBox {
        SecretBox::new(&[byte; KEY_LEN])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let a = boxed(7);
        let sealed = a.seal(b"sk-live-123", "org-1/openai").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"sk-live-123"));
        assert_eq!(
            a.open(&sealed, a.key_id(), "org-1/openai").unwrap(),
            b"sk-live-123"
        );
        // Another row's context, a flipped bit, a cut value: refused.
        assert_eq!(
            a.open(&sealed, a.key_id(), "org-2/openai"),
            Err(OpenError::Corrupt)
        );
        let mut flipped = sealed.clone();
        flipped[15] ^= 1;
        assert_eq!(
            a.open(&flipped, a.key_id(), "org-1/openai"),
            Err(OpenError::Corrupt)
        );
        assert_eq!(
            a.open(&sealed[..5], a.key_id(), "org-1/openai"),
            Err(OpenError::Corrupt)
        );
        // Another key: named as such, before trying.
        let b = boxed(8);
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(
            b.open(&sealed, a.key_id(), "org-1/openai"),
            Err(OpenError::OtherKey(a.key_id().to_string()))
        );
        // Each seal draws a fresh nonce.
        assert_ne!(sealed, a.seal(b"sk-live-123", "org-1/openai").unwrap());
    }

    #[test]
    fn keys_parse_from_base64_and_hex() {
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let want: Vec<u8> = (0u8..32).collect();
        assert_eq!(SecretBox::parse_key(b64).unwrap().to_vec(), want);
        assert_eq!(
            SecretBox::parse_key(&format!(" {hex}\n")).unwrap().to_vec(),
            want
        );
        assert!(SecretBox::parse_key("c2hvcnQ=")
            .unwrap_err()
            .contains("not 5"));
        assert!(SecretBox::parse_key("not a key!")
            .unwrap_err()
            .contains("base64 or hex"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
