//! The audit log's hash chain: each entry's hash commits to its own fields and to the
//! previous entry's hash, keyed with a server secret (HMAC-SHA256) so that someone who can
//! edit the database but does not hold the key cannot rebuild the chain after a change.
//!
//! `verify` walks entries in order and names the first broken link: an entry whose fields no
//! longer match its hash (edited), or one that does not follow the entry before it (deleted,
//! inserted or reordered).

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The key entries are chained with, derived from the server's hashing secret.
#[derive(Clone)]
pub struct ChainKey(Hmac<Sha256>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    pub fn new(secret: &SecretString) -> ChainKey {
        let mut derive =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(b"atalaya audit chain v1");
        let key = derive.finalize().into_bytes();
        ChainKey(
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }
}

/// One entry as the chain sees it.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub source_ip: &'a str,
    pub detail: &'a str,
    pub prev_hash: &'a [u8],
    pub hash: &'a [u8],
}

/// The hash of an entry with these fields after `prev_hash`.
pub fn link_hash(key: &ChainKey, link: &Link<'_>) -> Vec<u8> {
    let mut mac = key.0.clone();
    mac.update(link.prev_hash);
    mac.update(&link.seq.to_be_bytes());
    mac.update(&link.at_ms.to_be_bytes());
    // Length-prefixed, so no two field splits hash alike.
    for field in [
        link.actor,
        link.action,
        link.target,
        link.source_ip,
        link.detail,
    ] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("entry {seq} was altered: its fields no longer match its hash")]
    Altered { seq: i64 },
    #[error(
        "entry {seq} does not follow {}: entries were deleted, inserted or reordered",
        previous.map_or("the start of the log".to_owned(), |p| format!("entry {p}"))
    )]
    Unlinked { seq: i64, previous: Option<i64> },
}

/// A verified chain: how many entries, and the last hash (anchor it elsewhere to detect a
/// truncated tail later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head: Vec<u8>,
}

/// Checks links one at a time, in order (a log too large to hold is verified page by page).
pub struct Verifier<'k> {
    key: &'k ChainKey,
    previous: Option<(i64, Vec<u8>)>,
    entries: u64,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k ChainKey) -> Self {
        Verifier {
            key,
            previous: None,
            entries: 0,
        }
    }

    pub fn push(&mut self, link: &Link<'_>) -> Result<(), Broken> {
        let expected_prev: &[u8] = self.previous.as_ref().map_or(&GENESIS[..], |(_, h)| h);
        let in_order = self
            .previous
            .as_ref()
            .is_none_or(|(seq, _)| link.seq > *seq);
        if link.prev_hash != expected_prev || !in_order {
            return Err(Broken::Unlinked {
                seq: link.seq,
                previous: self.previous.as_ref().map(|(seq, _)| *seq),
            });
        }
        if link_hash(self.key, link) != link.hash {
            return Err(Broken::Altered { seq: link.seq });
        }
        self.previous = Some((link.seq, link.hash.to_vec()));
        self.entries += 1;
        Ok(())
    }

    pub fn finish(self) -> Verified {
        Verified {
            entries: self.entries,
            head: self.previous.map_or(GENESIS.to_vec(), |(_, h)| h),
        }
    }
}

/// Walks `links` in order; the first broken link, or the chain's length and head.
pub fn verify<'a>(
    key: &ChainKey,
    links: impl IntoIterator<Item = Link<'a>>,
) -> Result<Verified, Broken> {
    let mut verifier = Verifier::new(key);
    for link in links {
        verifier.push(&link)?;
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        seq: i64,
        action: String,
        prev: Vec<u8>,
        hash: Vec<u8>,
    }

    fn link(entry: &Owned) -> Link<'_> {
        Link {
            seq: entry.seq,
            at_ms: 1000 + entry.seq,
            actor: "admin",
            action: &entry.action,
            target: "key_1",
            source_ip: "127.0.0.1",
            detail: "{}",
            prev_hash: &entry.prev,
            hash: &entry.hash,
        }
    }

    fn chain(key: &ChainKey, count: i64) -> Vec<Owned> {
        let mut entries: Vec<Owned> = Vec::new();
        for seq in 1..=count {
            let prev = entries.last().map_or(GENESIS.to_vec(), |e| e.hash.clone());
            let mut entry = Owned {
                seq,
                action: format!("action-{seq}"),
                prev,
                hash: Vec::new(),
            };
            entry.hash = link_hash(key, &link(&entry));
            entries.push(entry);
        }
        entries
    }

    fn check(key: &ChainKey, entries: &[Owned]) -> Result<Verified, Broken> {
        verify(key, entries.iter().map(link))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let key = ChainKey::new(&SecretString::from("k".to_owned()));
        let entries = chain(&key, 5);
        let verified = check(&key, &entries).unwrap();
        assert_eq!(verified.entries, 5);
        assert_eq!(verified.head, entries[4].hash);
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_named() {
        let key = ChainKey::new(&SecretString::from("k".to_owned()));
        let mut edited = chain(&key, 5);
        edited[2].action = "nothing to see".into();
        assert_eq!(check(&key, &edited), Err(Broken::Altered { seq: 3 }));

        let mut deleted = chain(&key, 5);
        deleted.remove(2);
        assert_eq!(
            check(&key, &deleted),
            Err(Broken::Unlinked {
                seq: 4,
                previous: Some(2)
            })
        );
        let mut first_deleted = chain(&key, 3);
        first_deleted.remove(0);
        assert_eq!(
            check(&key, &first_deleted),
            Err(Broken::Unlinked {
                seq: 2,
                previous: None
            })
        );

        let mut inserted = chain(&key, 5);
        let forged = Owned {
            seq: 3,
            action: "forged".into(),
            prev: inserted[1].hash.clone(),
            hash: vec![0; 32],
        };
        inserted.insert(2, forged);
        assert_eq!(check(&key, &inserted), Err(Broken::Altered { seq: 3 }));

        let mut reordered = chain(&key, 5);
        reordered.swap(1, 2);
        assert_eq!(
            check(&key, &reordered),
            Err(Broken::Unlinked {
                seq: 3,
                previous: Some(1)
            })
        );

        // Without the key, a rebuilt chain does not verify.
        let other = ChainKey::new(&SecretString::from("other".to_owned()));
        assert_eq!(
            check(&key, &chain(&other, 2)),
            Err(Broken::Altered { seq: 1 })
        );
    }
}
