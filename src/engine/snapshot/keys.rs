//! Encrypted snapshots (`[encryption] encrypt = "all"`, and what an encrypting offsite
//! target holds). Packs are age files (`<id>.pack.age`, one age stream per pack, read
//! back by seeking in it) to the recipients only: this server cannot read them back.
//! Entry lists (`….tree.zst.age`) are encrypted to the recipients and to the store key,
//! an age identity of this backup directory's own (`store/key.txt`, 0600, never
//! uploaded): so the next snapshot can walk its parent without the operator's identity,
//! while anyone holding only the bucket reads nothing. Chunk ids are then HMAC-SHA256
//! under a key derived from the store key (and carried inside the encrypted entry list,
//! so a restorer with an identity can check them): a reader of the store cannot confirm
//! that a known file is in it by hashing the file. Pack names are random, never content
//! hashes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::catalog::{STORE_DIR, write_atomic};
use crate::encryption::{Identities, Recipients};
use crate::error::{Error, Result};

/// The store key's file under the backup directory.
pub const STORE_KEY_FILE: &str = "key.txt";

/// HMAC-SHA256 (RFC 2104) of `data` under `key`.
pub fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// How chunk ids are made: SHA-256 of the plain bytes, or keyed.
#[derive(Clone)]
pub enum ChunkIds {
    Sha256,
    Keyed([u8; 32]),
}

impl ChunkIds {
    pub fn id(&self, data: &[u8]) -> [u8; 32] {
        match self {
            ChunkIds::Sha256 => Sha256::digest(data).into(),
            ChunkIds::Keyed(key) => hmac_sha256(key, data),
        }
    }

    /// From an entry list's `chunk_key` (hex), if it has one.
    pub fn from_header(chunk_key: Option<&str>, tree: &Path) -> Result<Self> {
        let Some(hex_key) = chunk_key else {
            return Ok(ChunkIds::Sha256);
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut key).map_err(|e| {
            Error::verify(tree, "entry list readable", format!("its chunk key: {e}"))
        })?;
        Ok(ChunkIds::Keyed(key))
    }

    pub fn key_hex(&self) -> Option<String> {
        match self {
            ChunkIds::Sha256 => None,
            ChunkIds::Keyed(k) => Some(hex::encode(k)),
        }
    }
}

/// This backup directory's own key.
pub struct StoreKey {
    identity: Identities,
    public: String,
    chunk_key: [u8; 32],
}

impl StoreKey {
    fn path(root: &Path) -> PathBuf {
        root.join(STORE_DIR).join(STORE_KEY_FILE)
    }

    /// The store key, if this backup directory has one.
    pub fn load(root: &Path) -> Result<Option<StoreKey>> {
        let path = Self::path(root);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let bad = |why: &str| {
            Error::io(
                "read the store key",
                &path,
                io::Error::other(format!(
                    "{why}: restore it from a copy, or remove it (the next snapshot then reads every file again)"
                )),
            )
        };
        let secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| bad("it holds no age identity"))?;
        let parsed: age::x25519::Identity = secret
            .trim()
            .parse()
            .map_err(|_| bad("its identity does not parse"))?;
        let identity = Identities::load(&path).map_err(|e| bad(&e.detail))?;
        Ok(Some(StoreKey {
            identity,
            public: parsed.to_public().to_string(),
            chunk_key: Sha256::new()
                .chain_update(b"vertex-backup chunk ids v1\n")
                .chain_update(secret.trim().as_bytes())
                .finalize()
                .into(),
        }))
    }

    /// The store key, made (0600) on first use.
    pub fn load_or_create(root: &Path) -> Result<StoreKey> {
        if let Some(key) = Self::load(root)? {
            return Ok(key);
        }
        let identity = age::x25519::Identity::generate();
        let text = format!(
            "# vertex-backup store key: opens this backup directory's snapshot entry lists (not their data).\n# public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        );
        let path = Self::path(root);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        write_atomic(&path, text.as_bytes(), 0o600)?;
        Self::load(root)?.ok_or_else(|| Error::io("read", &path, io::ErrorKind::NotFound.into()))
    }

    pub fn chunk_ids(&self) -> ChunkIds {
        ChunkIds::Keyed(self.chunk_key)
    }

    /// The store key alone as a recipient (what the index is sealed to).
    pub fn recipient(&self) -> Result<Recipients> {
        Recipients::parse([self.public.as_str()])
            .map_err(|e| Error::Internal(format!("the store key as a recipient: {e}")))
    }
}

/// What sealing a snapshot takes: packs go to `packs`, entry lists to `trees`, index
/// files to `store` (the store key alone: the index never leaves this server).
pub struct Sealing {
    pub packs: Recipients,
    pub trees: Recipients,
    pub store: Recipients,
    pub ids: ChunkIds,
}

impl Sealing {
    pub fn new(recipients: &Recipients, store: &StoreKey) -> Result<Self> {
        let keys = recipients.keys();
        let trees = Recipients::parse(
            keys.iter()
                .map(|(k, _)| k.as_str())
                .chain([store.public.as_str()]),
        )
        .map_err(|e| Error::Internal(format!("the store key as a recipient: {e}")))?;
        Ok(Sealing {
            packs: recipients.clone(),
            trees,
            store: store.recipient()?,
            ids: store.chunk_ids(),
        })
    }
}

/// The identities an encrypted snapshot may be opened with: the operator's (`--identity`:
/// everything) and the store key (entry lists only, their parts included).
#[derive(Default)]
pub struct Opening {
    pub operator: Option<Identities>,
    pub store: Option<Identities>,
    /// Both as one, for the parts of entry lists (sealed to either).
    pub trees: Option<std::sync::Arc<Identities>>,
}

impl Opening {
    /// The operator's identity file, if given, and this backup directory's store key.
    pub fn new(operator: Option<&Path>, root: &Path) -> Result<Self> {
        let operator = match operator {
            Some(p) => Some(Identities::load(p).map_err(|e| Error::decrypt(p, e))?),
            None => None,
        };
        let store = StoreKey::load(root).ok().flatten().map(|k| k.identity);
        let files = [operator.as_ref(), store.as_ref()].map(|k| k.map(Identities::file));
        let trees = Identities::load_all(files.into_iter().flatten()).map(std::sync::Arc::new);
        Ok(Opening {
            operator,
            store,
            trees,
        })
    }

    /// The plaintext of the entry list at `path` (an age file), by whichever key opens it.
    pub fn open_tree(&self, path: &Path) -> Result<Box<dyn Read + Send>> {
        let mut last = None;
        for ids in [&self.operator, &self.store].into_iter().flatten() {
            let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
            match ids.decrypt(file) {
                Ok(r) => return Ok(Box::new(r)),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => Error::decrypt(path, e),
            None => Error::decrypt(
                path,
                crate::encryption::DecryptError {
                    failure: crate::encryption::DecryptFailure::NoIdentity,
                    detail: "it is encrypted and no identity was given (--identity)".into(),
                },
            ),
        })
    }
}

/// A writer that encrypts to recipients when there are any, else passes bytes through.
pub enum MaybeSealed<W: io::Write> {
    Plain(W),
    Sealed(age::stream::StreamWriter<W>),
}

impl<W: io::Write> MaybeSealed<W> {
    pub fn new(out: W, to: Option<&Recipients>) -> io::Result<Self> {
        Ok(match to {
            Some(r) => MaybeSealed::Sealed(r.encrypt(out)?),
            None => MaybeSealed::Plain(out),
        })
    }

    /// End the age stream (if any) and return the writer underneath.
    pub fn finish(self) -> io::Result<W> {
        match self {
            MaybeSealed::Plain(w) => Ok(w),
            MaybeSealed::Sealed(s) => s.finish(),
        }
    }
}

impl<W: io::Write> io::Write for MaybeSealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeSealed::Plain(w) => w.write(buf),
            MaybeSealed::Sealed(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeSealed::Plain(w) => w.flush(),
            MaybeSealed::Sealed(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_with_a_padded_key() {
        // RFC 4231 test case 2 ("Jefe"): a short key is zero-padded to the block, as here.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
