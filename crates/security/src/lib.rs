//! Key material: virtual API key generation, the keyed hash they are stored under, the
//! secret files (admin key, hashing key) created on first start, and the masking engine that
//! keeps secrets out of logs and stored text (`mask`).
//!
//! This crate never stores anything and never sees HTTP; the gateway decides who may call
//! what. Plaintext keys exist only in the value returned to whoever created them.

pub mod audit;
pub mod guard;
pub mod mask;
pub mod vault;

use std::fs::OpenOptions;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Every virtual key starts with this, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "sk-atl-";

/// How many characters of a key are kept for display (`sk-atl-` plus four).
const DISPLAY_CHARS: usize = KEY_PREFIX.len() + 4;

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("reading secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating secret file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret file {path} is empty; delete it to have a new one generated")]
    Empty { path: PathBuf },
}

/// HMAC-SHA256 of a key under a server-side secret: a stolen database alone cannot be used to
/// test candidate keys, and lookups stay a single indexed equality match.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

/// The stored form of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash(..)")
    }
}

impl KeyHash {
    /// Constant-time equality, for comparing against a single known key such as the admin key.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl KeyHasher {
    pub fn new(secret: &SecretString) -> Self {
        // HMAC zero-pads keys to the 64-byte block, so a digest padded by hand is the same
        // key, and the block-sized constructor cannot fail.
        let digest = Sha256::digest(secret.expose_secret().as_bytes());
        let mut block = [0u8; 64];
        block[..digest.len()].copy_from_slice(&digest);
        KeyHasher {
            mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
        }
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

/// 32 random bytes, URL-safe base64: 256 bits of entropy.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new virtual key: `sk-atl-` followed by 256 random bits.
pub fn generate_api_key() -> SecretString {
    SecretString::from(format!("{KEY_PREFIX}{}", random_token()))
}

/// The part of a key that may be shown in lists and logs.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_CHARS).collect()
}

/// Reads a secret from `path`, or creates the file with a fresh random token (mode 0600).
/// Returns the secret and whether it was created now.
pub fn load_or_create_secret_file(path: &Path) -> Result<(SecretString, bool), SecretFileError> {
    match OpenOptions::new().read(true).open(path) {
        Ok(mut file) => {
            let mut contents = String::new();
            file.read_to_string(&mut contents)
                .map_err(|source| SecretFileError::Read {
                    path: path.to_owned(),
                    source,
                })?;
            let secret = contents.trim();
            if secret.is_empty() {
                return Err(SecretFileError::Empty {
                    path: path.to_owned(),
                });
            }
            Ok((SecretString::from(secret.to_owned()), false))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let secret = random_token();
            let create = |source| SecretFileError::Create {
                path: path.to_owned(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(create)?;
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(create)?;
            file.write_all(secret.as_bytes()).map_err(create)?;
            file.write_all(b"\n").map_err(create)?;
            file.sync_all().map_err(create)?;
            Ok((SecretString::from(secret), true))
        }
        Err(source) => Err(SecretFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// True when a secret file can be read by group or others.
pub fn is_too_open(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
