//! Envelope encryption for stored secrets.
//!
//! Each value is encrypted with AES-256-GCM under a data key of its own (random, 256 bits);
//! the data key is encrypted ("wrapped") with AES-256-GCM under the master key. The secret's
//! name is authenticated with both, so a ciphertext moved to another name does not open.
//! Rotating the master key re-wraps the data keys only; values are never re-encrypted.
//!
//! The master key comes from `ATALAYA_MASTER_KEY` or a key file; any text works, the AES key
//! is its SHA-256. Its id (a hash, safe to store and print) tells which master key wrapped a
//! row, so a wrong key is a clear error rather than garbage.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key is empty")]
    EmptyMasterKey,
    #[error(
        "secret `{name}` was sealed under master key {sealed_with}, but the master key given is {given}"
    )]
    WrongMasterKey {
        name: String,
        sealed_with: String,
        given: String,
    },
    #[error("secret `{0}` does not decrypt: it was altered, or sealed under another name")]
    Corrupt(String),
    #[error("secret `{0}` is not valid UTF-8")]
    NotText(String),
}

/// The key that wraps every data key.
pub struct MasterKey {
    key: SecretBox<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    pub fn from_secret(secret: &SecretString) -> Result<MasterKey, VaultError> {
        let text = secret.expose_secret().trim();
        if text.is_empty() {
            return Err(VaultError::EmptyMasterKey);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"atalaya vault master key v1\0");
        hasher.update(text.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        let mut hasher = Sha256::new();
        hasher.update(b"atalaya vault key id v1\0");
        hasher.update(key);
        let digest = hasher.finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(MasterKey {
            key: SecretBox::new(Box::new(key)),
            id,
        })
    }

    /// A hash of the key: which key sealed a row, without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.expose_secret()))
    }
}

/// One sealed secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub master_key_id: String,
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// What the name is bound into: the value's and the data key's authentication data.
fn aad(purpose: &str, name: &str) -> Vec<u8> {
    format!("atalaya vault v1\0{purpose}\0{name}").into_bytes()
}

/// Encrypts `value` under a fresh data key, wrapped by `master`.
pub fn seal(master: &MasterKey, name: &str, value: &str) -> Sealed {
    let data_key: SecretBox<[u8; 32]> = SecretBox::new(Box::new(random::<32>()));
    let nonce = random::<NONCE_LEN>();
    let value_cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key.expose_secret()));
    // AES-GCM encryption fails only for inputs over 64 GiB.
    let ciphertext = value_cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.as_bytes(),
                aad: &aad("value", name),
            },
        )
        .unwrap_or_default();
    let (wrapped_key, key_nonce) = wrap(master, name, &data_key);
    Sealed {
        ciphertext,
        nonce: nonce.to_vec(),
        wrapped_key,
        key_nonce,
        master_key_id: master.id.clone(),
    }
}

/// The data key sealed under `master`, and the nonce used.
fn wrap(master: &MasterKey, name: &str, data_key: &SecretBox<[u8; 32]>) -> (Vec<u8>, Vec<u8>) {
    let key_nonce = random::<NONCE_LEN>();
    // AES-GCM encryption fails only for inputs over 64 GiB.
    let wrapped = master
        .cipher()
        .encrypt(
            Nonce::from_slice(&key_nonce),
            Payload {
                msg: data_key.expose_secret(),
                aad: &aad("data key", name),
            },
        )
        .unwrap_or_default();
    (wrapped, key_nonce.to_vec())
}

fn unwrap_key(
    master: &MasterKey,
    name: &str,
    sealed: &Sealed,
) -> Result<SecretBox<[u8; 32]>, VaultError> {
    if sealed.master_key_id != master.id {
        return Err(VaultError::WrongMasterKey {
            name: name.to_owned(),
            sealed_with: sealed.master_key_id.clone(),
            given: master.id.clone(),
        });
    }
    if sealed.key_nonce.len() != NONCE_LEN {
        return Err(VaultError::Corrupt(name.to_owned()));
    }
    let bytes = master
        .cipher()
        .decrypt(
            Nonce::from_slice(&sealed.key_nonce),
            Payload {
                msg: &sealed.wrapped_key,
                aad: &aad("data key", name),
            },
        )
        .map_err(|_| VaultError::Corrupt(name.to_owned()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| VaultError::Corrupt(name.to_owned()))?;
    Ok(SecretBox::new(Box::new(key)))
}

/// Decrypts a sealed secret.
pub fn open(master: &MasterKey, name: &str, sealed: &Sealed) -> Result<SecretString, VaultError> {
    let data_key = unwrap_key(master, name, sealed)?;
    if sealed.nonce.len() != NONCE_LEN {
        return Err(VaultError::Corrupt(name.to_owned()));
    }
    let plain = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key.expose_secret()))
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad("value", name),
            },
        )
        .map_err(|_| VaultError::Corrupt(name.to_owned()))?;
    String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| VaultError::NotText(name.to_owned()))
}

/// The same secret with its data key wrapped by `new` instead of `old`; the value's
/// ciphertext is unchanged.
pub fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    name: &str,
    sealed: &Sealed,
) -> Result<Sealed, VaultError> {
    let data_key = unwrap_key(old, name, sealed)?;
    let (wrapped_key, key_nonce) = wrap(new, name, &data_key);
    Ok(Sealed {
        ciphertext: sealed.ciphertext.clone(),
        nonce: sealed.nonce.clone(),
        wrapped_key,
        key_nonce,
        master_key_id: new.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(text: &str) -> MasterKey {
        MasterKey::from_secret(&SecretString::from(text.to_owned())).unwrap()
    }

    #[test]
    fn sealed_values_open_and_never_hold_the_plaintext() {
        let key = master("m1");
        let sealed = seal(&key, "openai", "sk-very-secret-value");
        let all = [&sealed.ciphertext[..], &sealed.wrapped_key[..]].concat();
        assert!(!all.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            open(&key, "openai", &sealed).unwrap().expose_secret(),
            "sk-very-secret-value"
        );
        // Two seals of one value differ (fresh data key and nonces).
        assert_ne!(seal(&key, "openai", "sk-very-secret-value"), sealed);
    }

    #[test]
    fn a_wrong_key_a_moved_ciphertext_or_a_flipped_bit_is_an_error() {
        let key = master("m1");
        let sealed = seal(&key, "openai", "value");
        assert!(matches!(
            open(&master("m2"), "openai", &sealed),
            Err(VaultError::WrongMasterKey { .. })
        ));
        assert!(matches!(
            open(&key, "anthropic", &sealed),
            Err(VaultError::Corrupt(_))
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            open(&key, "openai", &flipped),
            Err(VaultError::Corrupt(_))
        ));
        assert!(matches!(
            MasterKey::from_secret(&SecretString::from("  ".to_owned())),
            Err(VaultError::EmptyMasterKey)
        ));
    }

    #[test]
    fn rewrapping_moves_a_secret_to_the_new_master_key() {
        let (old, new) = (master("old"), master("new"));
        let sealed = seal(&old, "s", "value");
        let moved = rewrap(&old, &new, "s", &sealed).unwrap();
        assert_eq!(moved.ciphertext, sealed.ciphertext);
        assert_eq!(moved.master_key_id, new.id());
        assert_eq!(open(&new, "s", &moved).unwrap().expose_secret(), "value");
        assert!(open(&old, "s", &moved).is_err());
    }
}
