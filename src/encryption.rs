//! Encryption to age public keys (docs/design.md §5): the server holds only recipients (X25519
//! public keys, `age1…`), so it can write, upload, retain and verify ciphertext, yet what
//! it wrote opens only with an identity kept elsewhere. The age format is the `age` crate's
//! (the stock `age` CLI reads what we write, and we read what it writes); nothing here
//! implements a cipher.
//!
//! - [`Recipients`]: the configured public keys, checked; their fingerprints (what stays
//!   in clear in metadata); the encrypting writer.
//! - [`Identities`]: an identity file (`age-keygen` output) loaded for `restore`, deep
//!   `verify` and `ls`; the decrypting reader. Its contents never reach a log or a message.
//! - [`DecryptFailure`]: why a file did not open, in words an operator can act on.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The suffix of an encrypted data file (`db_backup_X.db.age`, `….tar.zst.age`).
pub const AGE_SUFFIX: &str = ".age";

/// The environment variable naming an identity file (like `--identity`).
pub const IDENTITY_ENV: &str = "VERTEX_BACKUP_IDENTITY";

/// The configured recipients, parsed.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    text: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Recipients {
    /// Parse `age1…` public keys; the error names the one that does not parse. Lines of a
    /// recipients file may carry `#` comments and blank lines.
    pub fn parse<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Recipients, String> {
        let mut parsed = Vec::new();
        let mut text = Vec::new();
        for raw in keys {
            let key = raw.split('#').next().unwrap_or_default().trim();
            if key.is_empty() {
                continue;
            }
            if key.starts_with("AGE-SECRET-KEY-") {
                return Err("this is an age IDENTITY (a secret key), not a recipient: give its public key (`age-keygen -y KEYFILE` prints it) and keep the identity off this server".into());
            }
            if key.starts_with("ssh-") {
                return Err(format!(
                    "`{}…`: SSH keys are not supported; make an age key with `age-keygen` and give its public key (age1…)",
                    &key[..key.len().min(12)]
                ));
            }
            let recipient = age::x25519::Recipient::from_str(key)
                .map_err(|e| format!("`{key}` is not an age X25519 public key (age1…): {e}"))?;
            parsed.push(recipient);
            text.push(key.to_string());
        }
        if parsed.is_empty() {
            return Err("no recipients: give at least one age public key (age1…)".into());
        }
        Ok(Recipients { keys: parsed, text })
    }

    /// The recipients' fingerprints, in order: what metadata records, so `list` can say
    /// which keys open a backup without naming anything secret.
    pub fn fingerprints(&self) -> Vec<String> {
        self.text.iter().map(|t| fingerprint(t)).collect()
    }

    /// Each recipient's public key (`age1…`, not secret) with its fingerprint, in order:
    /// what `check-config` prints so an operator can tell which key a fingerprint is.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.text
            .iter()
            .map(|t| (t.clone(), fingerprint(t)))
            .collect()
    }

    /// A writer that encrypts everything written to `out` to every recipient. Call
    /// `finish()` on it, or the file is truncated (and will not decrypt).
    pub fn encrypt<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        encryptor.wrap_output(out)
    }
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of a recipient's text: short,
/// stable, and the same on every server that has the same public key.
pub fn fingerprint(recipient: &str) -> String {
    let digest = Sha256::digest(recipient.trim().as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

/// Why an encrypted file did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecryptFailure {
    /// No identity was given.
    NoIdentity,
    /// The identity file is missing, unreadable or not an age identity file.
    BadIdentity,
    /// None of the identity's keys is a recipient of the file.
    WrongKey,
    /// The header is not an age header, or its MAC does not match (damaged or tampered).
    Header,
    /// The body ends early or a chunk does not authenticate (truncated or tampered).
    Body,
}

impl DecryptFailure {
    pub fn describe(self) -> &'static str {
        match self {
            DecryptFailure::NoIdentity => "it is encrypted and no identity was given",
            DecryptFailure::BadIdentity => "the identity file cannot be used",
            DecryptFailure::WrongKey => {
                "none of the identity's keys opens it (a wrong key, or its recipients' lines were damaged)"
            }
            DecryptFailure::Header => {
                "its age header is damaged or was tampered with (or it is not an age file)"
            }
            DecryptFailure::Body => "its ciphertext is truncated or was tampered with",
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            DecryptFailure::NoIdentity => {
                "pass --identity FILE (or set $VERTEX_BACKUP_IDENTITY) with the age identity whose public key is a recipient; `vertex-backup list` shows which keys open each backup"
            }
            DecryptFailure::BadIdentity => {
                "give the file `age-keygen` wrote (lines starting AGE-SECRET-KEY-); nothing was changed"
            }
            DecryptFailure::WrongKey => {
                "use the identity of one of the backup's recipients (`vertex-backup list` shows their fingerprints); nothing was changed"
            }
            DecryptFailure::Header | DecryptFailure::Body => {
                "this copy cannot be trusted: restore another backup, or fetch this one again from an offsite target; nothing was changed"
            }
        }
    }

    /// Whether the failure is the key's (none given, an unusable file, not a recipient's)
    /// rather than the backup's: the backup's contents are then unknown, not bad.
    pub fn is_about_the_key(self) -> bool {
        matches!(
            self,
            DecryptFailure::NoIdentity | DecryptFailure::BadIdentity | DecryptFailure::WrongKey
        )
    }

    /// What `verify` says when the key is the problem.
    pub fn describe_for_verify(self) -> &'static str {
        match self {
            DecryptFailure::WrongKey => {
                "this identity is not among the backup's recipients (`vertex-backup list` shows their fingerprints)"
            }
            DecryptFailure::BadIdentity => "the identity file cannot be used",
            _ => "no identity was given",
        }
    }

    /// Classify an age decryption error.
    pub fn of(e: &age::DecryptError) -> DecryptFailure {
        match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => {
                DecryptFailure::WrongKey
            }
            age::DecryptError::InvalidHeader
            | age::DecryptError::InvalidMac
            | age::DecryptError::UnknownFormat => DecryptFailure::Header,
            age::DecryptError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                DecryptFailure::Header
            }
            _ => DecryptFailure::Body,
        }
    }
}

/// A decryption failure with what it is about (the caller turns it into an `Error`).
#[derive(Debug)]
pub struct DecryptError {
    pub failure: DecryptFailure,
    pub detail: String,
}

/// An identity file, loaded. Debug and errors never show its contents.
pub struct Identities {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    file: PathBuf,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identities({}, {} keys)",
            self.file.display(),
            self.identities.len()
        )
    }
}

impl Identities {
    /// Load an identity file as `age-keygen` writes it.
    pub fn load(path: &Path) -> Result<Identities, DecryptError> {
        let bad = |detail: String| DecryptError {
            failure: DecryptFailure::BadIdentity,
            detail,
        };
        let file =
            File::open(path).map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
        let parsed = age::IdentityFile::from_buffer(BufReader::new(file))
            // The parser's message may quote the line; say only that it is not one.
            .map_err(|_| bad(format!("{} is not an age identity file", path.display())))?;
        let identities = parsed.into_identities().map_err(|_| {
            bad(format!(
                "{} holds an identity this build cannot use",
                path.display()
            ))
        })?;
        if identities.is_empty() {
            return Err(bad(format!("{} holds no identity", path.display())));
        }
        Ok(Identities {
            identities,
            file: path.to_path_buf(),
        })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every identity of the files given that load, as one (none load: `None`).
    pub fn load_all<'p>(files: impl IntoIterator<Item = &'p Path>) -> Option<Identities> {
        let mut all: Option<Identities> = None;
        for file in files {
            let Ok(loaded) = Identities::load(file) else {
                continue;
            };
            match &mut all {
                Some(a) => a.identities.extend(loaded.identities),
                None => all = Some(loaded),
            }
        }
        all
    }

    /// A reader of the plaintext of the age file `input`. Errors in the header (wrong
    /// key, damage) come now; damage in the body comes from `read` as an
    /// [`io::ErrorKind::InvalidData`] error ([`body_error`] tells it apart).
    pub fn decrypt<R: Read>(&self, input: R) -> Result<age::stream::StreamReader<R>, DecryptError> {
        let decryptor = age::Decryptor::new(input).map_err(|e| DecryptError {
            failure: DecryptFailure::of(&e),
            detail: e.to_string(),
        })?;
        decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| DecryptError {
                failure: DecryptFailure::of(&e),
                detail: e.to_string(),
            })
    }
}

/// Whether an I/O error from a decrypting reader means the ciphertext is damaged (a chunk
/// that does not authenticate, or a stream that ends before its last chunk).
pub fn body_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// A JSON value sealed as base64 of its age encryption (an encrypted target's metadata
/// carries the local metadata this way), opened with `identities`.
pub fn unseal_json<T: serde::de::DeserializeOwned>(
    identities: &Identities,
    sealed: &str,
) -> Result<T, DecryptError> {
    use base64::Engine as _;
    let damaged = |detail: String| DecryptError {
        failure: DecryptFailure::Header,
        detail,
    };
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .map_err(|e| damaged(format!("the sealed metadata is not base64: {e}")))?;
    let mut json = Vec::new();
    identities
        .decrypt(&ciphertext[..])?
        .read_to_end(&mut json)
        .map_err(|e| DecryptError {
            failure: DecryptFailure::Body,
            detail: e.to_string(),
        })?;
    serde_json::from_slice(&json)
        .map_err(|e| damaged(format!("the sealed metadata is not metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    fn identity_file(dir: &Path, secret: &str) -> PathBuf {
        let p = dir.join("key.txt");
        std::fs::write(&p, format!("# created: test\n{secret}\n")).unwrap();
        p
    }

    #[test]
    fn round_trips_to_several_recipients_and_refuses_the_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let (op_pub, op_secret) = keypair();
        let (escrow_pub, escrow_secret) = keypair();
        let (_, stranger) = keypair();
        let r = Recipients::parse([op_pub.as_str(), escrow_pub.as_str()]).unwrap();
        assert_eq!(r.fingerprints().len(), 2);
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(b"the plaintext").unwrap();
        let sealed = w.finish().unwrap();
        for secret in [&op_secret, &escrow_secret] {
            let ids = Identities::load(&identity_file(dir.path(), secret)).unwrap();
            let mut out = Vec::new();
            ids.decrypt(&sealed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, b"the plaintext");
        }
        let wrong = Identities::load(&identity_file(dir.path(), &stranger)).unwrap();
        let Err(e) = wrong.decrypt(&sealed[..]) else {
            panic!("a stranger's key opened it")
        };
        assert_eq!(e.failure, DecryptFailure::WrongKey);
        assert!(!e.detail.contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn damage_is_told_apart_from_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = keypair();
        let r = Recipients::parse([public.as_str()]).unwrap();
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        let sealed = w.finish().unwrap();
        let ids = Identities::load(&identity_file(dir.path(), &secret)).unwrap();
        // A flipped byte in the header's MAC. (One in a recipient's stanza reads as a wrong
        // key: the file key does not unwrap, whoever tries.)
        let mut header = sealed.clone();
        let mac = header.windows(5).position(|w| w == b"\n--- ").unwrap() + 6;
        header[mac] ^= 1;
        let Err(e) = ids.decrypt(&header[..]) else {
            panic!("a damaged header opened")
        };
        assert_eq!(e.failure, DecryptFailure::Header);
        // A flipped byte in the body: the header opens, reading fails.
        let mut body = sealed.clone();
        let n = body.len();
        body[n - 100] ^= 1;
        let e = ids
            .decrypt(&body[..])
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(body_error(&e), "{e:?}");
        // Truncated.
        let cut = &sealed[..sealed.len() - 1000];
        let e = ids
            .decrypt(cut)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(body_error(&e), "{e:?}");
    }

    #[test]
    fn recipients_that_are_not_public_keys_are_refused_by_name() {
        let (_, secret) = keypair();
        let e = Recipients::parse([secret.as_str()]).unwrap_err();
        assert!(e.contains("IDENTITY"), "{e}");
        assert!(!e.contains(&secret[15..]), "the secret leaked into: {e}");
        assert!(
            Recipients::parse(["age1nope"])
                .unwrap_err()
                .contains("age1nope")
        );
        assert!(
            Recipients::parse(["ssh-ed25519 AAAA"])
                .unwrap_err()
                .contains("SSH")
        );
        assert!(Recipients::parse(["# only a comment", ""]).is_err());
    }

    #[test]
    fn an_identity_file_that_is_not_one_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "password123\n").unwrap();
        let e = Identities::load(&p).unwrap_err();
        assert_eq!(e.failure, DecryptFailure::BadIdentity);
        assert!(!e.detail.contains("password123"), "{}", e.detail);
    }
}
