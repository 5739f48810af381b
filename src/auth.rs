//! Credentials: API keys and passwords. Keys carry 238 bits of randomness,
//! are stored only as a SHA-256 digest (a fast hash is right for random
//! secrets) and are found by their visible prefix; passwords are hashed with
//! argon2id at OWASP's recommended cost.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "tl_";
/// Characters of a key kept in clear for lookup and display.
pub const VISIBLE_PREFIX_CHARS: usize = 12;
const KEY_RANDOM_CHARS: usize = 40;

/// A fresh API key: `tl_` followed by 40 random letters and digits.
pub fn generate_api_key() -> String {
    format!(
        "{KEY_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rng(), KEY_RANDOM_CHARS)
    )
}

/// A fresh password for a generated first login.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

/// The part of a key stored in clear (and unique enough to find its row).
pub fn visible_prefix(key: &str) -> &str {
    let end = key
        .char_indices()
        .nth(VISIBLE_PREFIX_CHARS)
        .map_or(key.len(), |(i, _)| i);
    &key[..end]
}

pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time comparison of a presented key with a stored digest.
pub fn api_key_matches(key: &str, stored: &[u8]) -> bool {
    hash_api_key(key).ct_eq(stored).into()
}

/// Checks an operator-chosen key (`[init] api_key`).
pub fn check_chosen_key(key: &str) -> Result<(), String> {
    if !key.starts_with(KEY_PREFIX) {
        return Err(format!("must start with {KEY_PREFIX:?}"));
    }
    if !(24..=128).contains(&key.len()) {
        return Err("must be 24 to 128 characters long".into());
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("may contain only letters, digits, '_' and '-'".into());
    }
    Ok(())
}

/// An argon2id hash in PHC string form (m=19 MiB, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a stored argon2 hash (in constant time).
pub fn verify_password(password: &str, stored: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(stored)
        .and_then(|hash| Argon2::default().verify_password(password.as_bytes(), &hash))
        .is_ok()
}

/// Every session token starts with this (API keys with `tl_`).
pub const SESSION_PREFIX: &str = "tls_";

/// A fresh session token: `tls_` followed by 40 random letters and digits.
pub fn generate_session_token() -> String {
    format!(
        "{SESSION_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rng(), KEY_RANDOM_CHARS)
    )
}

/// Passwords chosen through the API: at least this many characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// An account's email address, as every way in (the API, the operator
/// commands, the first start's configuration) takes it: trimmed and
/// lower-cased, with an `@`, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// What is wrong with an address, said after the field's name.
    pub const INVALID: &'static str = "must be an email address";

    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let email = raw.trim().to_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(Email::INVALID);
        }
        Ok(Email(email))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A user's role, weakest first: viewers read, members also change
/// projects, keys and rules, owners also manage users and archive projects.
/// Stored, sent and taken as its lower-case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Member, Role::Owner];
    /// What is wrong with a name that is not a role, said after the field's name.
    pub const INVALID: &'static str = "must be owner, member or viewer";

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read as [`FromStr`](std::str::FromStr) reads it, so that a body with
/// another name says which names there are.
impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Role {
    type Err = &'static str;

    fn from_str(name: &str) -> Result<Role, &'static str> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or(Role::INVALID)
    }
}

/// A password someone chooses: at least [`MIN_PASSWORD_CHARS`]
/// characters. (Logging in checks any password against the stored hash.)
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Password, String> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!(
                "must have at least {MIN_PASSWORD_CHARS} characters"
            ));
        }
        Ok(Password(raw))
    }

    /// Its argon2 hash, computed off the async threads (it takes tens of
    /// milliseconds and 19 MiB on purpose).
    pub async fn hash(self) -> Result<String, String> {
        tokio::task::spawn_blocking(move || hash_password(&self.0))
            .await
            .map_err(|e| format!("hashing failed: {e}"))?
            .map_err(|e| format!("hashing the password failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_trimmed_and_lower_cased_and_needs_an_at() {
        assert_eq!(
            Email::parse("  Ann@Acme.Example ").map(Email::into_string),
            Ok("ann@acme.example".to_owned())
        );
        assert_eq!(Email::parse("ann.acme.example"), Err(Email::INVALID));
        let long = format!("{}@x.example", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(Email::INVALID));
    }

    #[tokio::test]
    async fn a_chosen_password_needs_eight_characters_and_hashes_to_itself() {
        assert!(Password::parse("seven77".into()).is_err());
        // Characters, not bytes: seven two-byte letters are seven.
        assert!(Password::parse("ééééééé".into()).is_err());
        let hash = Password::parse("eight888".into())
            .expect("long enough")
            .hash()
            .await
            .expect("hash");
        assert!(verify_password("eight888", &hash));
        assert!(!verify_password("eight889", &hash));
    }

    #[test]
    fn a_role_reads_and_prints_its_lower_case_name() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).expect("json"),
                serde_json::json!(role.as_str())
            );
        }
        assert_eq!("Owner".parse::<Role>(), Err(Role::INVALID));
        assert_eq!(
            serde_json::from_str::<Role>("\"viewer\"").expect("a role"),
            Role::Viewer
        );
        let refused = serde_json::from_str::<Role>("\"admin\"").expect_err("not a role");
        assert!(refused.to_string().starts_with(Role::INVALID), "{refused}");
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Owner);
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert!(check_chosen_key(&a).is_ok(), "{a}");
        assert_eq!(visible_prefix(&a).len(), VISIBLE_PREFIX_CHARS);
        assert!(api_key_matches(&a, &hash_api_key(&a)));
        assert!(!api_key_matches(&b, &hash_api_key(&a)));
    }

    #[test]
    fn chosen_keys_are_checked() {
        assert!(check_chosen_key("sk_0123456789012345678901").is_err());
        assert!(check_chosen_key("tl_short").is_err());
        assert!(check_chosen_key("tl_has space 0123456789012").is_err());
        assert!(check_chosen_key("tl_test_0123456789abcdef").is_ok());
    }

    #[test]
    fn password_hash_is_argon2id() {
        let h = hash_password("correct horse").expect("hashes");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }
}
