//! Reading a backup's data file as its format says (docs/design.md §5): the one place the engine
//! turns stored bytes into plaintext. A clear file is passed through; an age file is
//! decrypted with the identity given, and every way that can fail becomes
//! [`Error::Decrypt`] — no identity, an unusable one, a wrong key, a damaged header at
//! once, damage in the body as the reader reaches it. The plaintext is what
//! `format.compression` describes (the callers decompress). A database needs a file for
//! SQLite to open, so [`SqliteFile`] decrypts one into a private temporary copy that is
//! removed when dropped.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::catalog::{Format, PartialFile};
use crate::encryption::{DecryptError, DecryptFailure, Identities};
use crate::error::{Error, IoContext, Result};

/// How to read a data file: the format its metadata records, and the identity to
/// decrypt it with (if it is encrypted and one was given).
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub format: &'a Format,
    pub identity: Option<&'a Path>,
}

/// The plaintext of the data file at `path`, read as `format` says: clear data as it is
/// stored, an age file decrypted with `identity`. Damage in an age body surfaces from
/// `read` as an io error that [`read_error`] turns into `Error::Decrypt` (Body).
pub fn open_data(
    path: &Path,
    format: &Format,
    identity: Option<&Path>,
) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).ctx("open", path)?;
    let (plain, _watch) = plaintext(
        BufReader::with_capacity(1 << 20, file),
        path,
        format,
        identity,
    )?;
    Ok(Box::new(plain))
}

/// The error an io error from a [`Plaintext`] reader stands for: `Error::Decrypt` (Body)
/// when the ciphertext did not authenticate, else an I/O error on `path`.
pub fn read_error(op: &'static str, path: &Path, e: io::Error) -> Error {
    if is_body_damage(&e) {
        Error::decrypt(path, body_damage(e.to_string()))
    } else {
        Error::io(op, path, e)
    }
}

fn is_body_damage(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BodyDamage>())
}

fn body_damage(detail: String) -> DecryptError {
    DecryptError {
        failure: DecryptFailure::Body,
        detail,
    }
}

/// Marks an io error as the ciphertext's own (a chunk that does not authenticate, or a
/// stream cut before its last chunk), so it is told apart from a failing disk.
#[derive(Debug, thiserror::Error)]
#[error("the ciphertext is truncated or was tampered with ({0})")]
struct BodyDamage(String);

/// Whether the body of an age file failed to authenticate somewhere down a reader stack
/// (a decompressor or the tar reader may re-wrap the error on the way up).
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<OnceLock<String>>);

impl BodyWatch {
    /// `Error::Decrypt` (Body) for `path`, if the body failed.
    pub fn error(&self, path: &Path) -> Option<Error> {
        self.0
            .get()
            .map(|detail| Error::decrypt(path, body_damage(detail.clone())))
    }
}

/// The plaintext of a data file being read.
pub struct Plaintext<R: Read> {
    inner: Inner<R>,
    watch: BodyWatch,
}

enum Inner<R: Read> {
    Clear(R),
    Age(Box<age::stream::StreamReader<R>>),
}

impl<R: Read> Read for Plaintext<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Clear(r) => r.read(buf),
            Inner::Age(r) => r.read(buf).map_err(|e| {
                if crate::encryption::body_error(&e) {
                    let _ = self.watch.0.set(e.to_string());
                    io::Error::new(io::ErrorKind::InvalidData, BodyDamage(e.to_string()))
                } else {
                    e
                }
            }),
        }
    }
}

/// Open the plaintext of `input` (the stored bytes of `path`) as `format` says. For an
/// age file the header is read and opened now: no identity, an unusable identity, a
/// wrong key and a damaged header fail here, before any plaintext is read.
pub fn plaintext<R: Read>(
    input: R,
    path: &Path,
    format: &Format,
    identity: Option<&Path>,
) -> Result<(Plaintext<R>, BodyWatch)> {
    if let Some(why) = format.unreadable() {
        return Err(Error::verify(path, "readable", why));
    }
    let watch = BodyWatch::default();
    if !format.is_encrypted() {
        let plain = Plaintext {
            inner: Inner::Clear(input),
            watch: watch.clone(),
        };
        return Ok((plain, watch));
    }
    let identities = load_identity(path, identity)?;
    let reader = identities
        .decrypt(input)
        .map_err(|e| Error::decrypt(path, e))?;
    let plain = Plaintext {
        inner: Inner::Age(Box::new(reader)),
        watch: watch.clone(),
    };
    Ok((plain, watch))
}

/// The identity to open `path` with, loaded; `Error::Decrypt` without one.
pub fn load_identity(path: &Path, identity: Option<&Path>) -> Result<Identities> {
    let Some(identity) = identity else {
        return Err(Error::decrypt(
            path,
            DecryptError {
                failure: DecryptFailure::NoIdentity,
                detail: "no identity was given".into(),
            },
        ));
    };
    Identities::load(identity).map_err(|e| Error::decrypt(path, e))
}

/// A database backup as a file SQLite can open: the data file itself, or — when it is
/// encrypted — its plaintext in a private temporary copy beside it (mode 0600, named
/// `….decrypted.partial` so a crash's leftover is cleaned like any partial file),
/// removed when this is dropped.
pub enum SqliteFile {
    Stored(PathBuf),
    Decrypted(PartialFile),
}

impl SqliteFile {
    /// Decrypt `path` if `format` says it is encrypted; the whole body is read (and so
    /// authenticated) before this returns.
    pub fn open(path: &Path, format: &Format, identity: Option<&Path>) -> Result<SqliteFile> {
        if format.is_snapshot() {
            // A database snapshot: its chunks put back together (each checked on the way).
            let mut name = path.as_os_str().to_os_string();
            name.push(".db");
            let (partial, file) = PartialFile::create(Path::new(&name), 0o600)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            super::snapshot::read_database_snapshot(path, (None, identity), &mut out)?;
            io::Write::flush(&mut out).map_err(|e| Error::io("write", partial.temp_path(), e))?;
            return Ok(SqliteFile::Decrypted(partial));
        }
        if !format.is_encrypted() && format.unreadable().is_none() {
            return Ok(SqliteFile::Stored(path.to_path_buf()));
        }
        let mut plain = open_data(path, format, identity)?;
        let mut name = path.as_os_str().to_os_string();
        name.push(".decrypted");
        let (partial, mut file) = PartialFile::create(Path::new(&name), 0o600)?;
        io::copy(&mut plain, &mut file)
            .map_err(|e| read_error("decrypt into", partial.temp_path(), e))
            .map_err(|e| match e {
                Error::Decrypt {
                    failure, detail, ..
                } => Error::Decrypt {
                    path: path.to_path_buf(),
                    failure,
                    detail,
                },
                other => other,
            })?;
        Ok(SqliteFile::Decrypted(partial))
    }

    /// The file SQLite opens.
    pub fn path(&self) -> &Path {
        match self {
            SqliteFile::Stored(p) => p,
            SqliteFile::Decrypted(partial) => partial.temp_path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Write;

    fn sealed(dir: &Path, plain: &[u8]) -> (PathBuf, PathBuf, Format) {
        let id = age::x25519::Identity::generate();
        let key = dir.join("key.txt");
        std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let public = id.to_public().to_string();
        let recipients = crate::encryption::Recipients::parse([public.as_str()]).unwrap();
        let mut w = recipients.encrypt(Vec::new()).unwrap();
        w.write_all(plain).unwrap();
        let path = dir.join("data.age");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        (
            path,
            key,
            Format::sqlite().encrypted(recipients.fingerprints()),
        )
    }

    #[test]
    fn opens_clear_and_age_data_and_names_a_missing_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key, format) = sealed(dir.path(), b"plaintext bytes");
        let mut out = Vec::new();
        open_data(&path, &format, Some(&key))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"plaintext bytes");
        let Err(e) = open_data(&path, &format, None) else {
            panic!("opened without an identity")
        };
        assert!(e.to_string().contains("no identity was given"), "{e}");
        let mut clear = Vec::new();
        open_data(&path, &Format::sqlite(), None)
            .unwrap()
            .read_to_end(&mut clear)
            .unwrap();
        assert_eq!(clear, std::fs::read(&path).unwrap());
    }

    #[test]
    fn body_damage_is_a_decrypt_error_and_the_private_copy_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key, format) = sealed(dir.path(), &vec![3u8; 300_000]);
        let copy = SqliteFile::open(&path, &format, Some(&key)).unwrap();
        let temp = copy.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(temp.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&temp).unwrap(), vec![3u8; 300_000]);
        drop(copy);
        assert!(!temp.exists());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let Err(e) = SqliteFile::open(&path, &format, Some(&key)) else {
            panic!("a damaged body decrypted")
        };
        assert!(
            matches!(&e, Error::Decrypt { failure: DecryptFailure::Body, path: p, .. } if p == &path),
            "{e:?}"
        );
        assert!(!temp.exists());
    }
}
