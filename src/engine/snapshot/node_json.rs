//! How an entry's paths and extended attributes are written as JSON: a path as a string
//! when it is UTF-8, else base64 of its bytes; attributes as `[name, base64]` pairs,
//! checked where they are parsed.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::xattrs::Xattr;

/// A path as JSON: a string when it is UTF-8, else `{"b64": "…"}` of its bytes (a media
/// file may be named anything a filesystem allows).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PathRepr {
    Text(String),
    Bytes { b64: String },
}

impl PathRepr {
    fn of(path: &Path) -> Self {
        match path.to_str() {
            Some(s) => PathRepr::Text(s.to_string()),
            None => PathRepr::Bytes {
                b64: base64::engine::general_purpose::STANDARD.encode(path.as_os_str().as_bytes()),
            },
        }
    }
    fn into_path<E: serde::de::Error>(self) -> std::result::Result<PathBuf, E> {
        match self {
            PathRepr::Text(s) => Ok(PathBuf::from(s)),
            PathRepr::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|b| PathBuf::from(OsString::from_vec(b)))
                .map_err(E::custom),
        }
    }
}

pub mod raw_path {
    use super::*;
    pub fn serialize<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
        PathRepr::of(p).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<PathBuf, D::Error> {
        PathRepr::deserialize(d)?.into_path()
    }
}

pub mod raw_path_opt {
    use super::*;
    pub fn serialize<S: Serializer>(
        p: &Option<PathBuf>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        p.as_deref().map(PathRepr::of).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<PathBuf>, D::Error> {
        Option::<PathRepr>::deserialize(d)?
            .map(PathRepr::into_path)
            .transpose()
    }
}

pub mod stored_xattrs {
    use super::*;
    pub fn serialize<S: Serializer>(x: &[Xattr], s: S) -> std::result::Result<S::Ok, S::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        x.iter()
            .map(|a| (a.name.as_str(), engine.encode(&a.value)))
            .collect::<Vec<_>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<Xattr>, D::Error> {
        use serde::de::Error as _;
        let engine = base64::engine::general_purpose::STANDARD;
        Vec::<(String, String)>::deserialize(d)?
            .into_iter()
            .map(|(name, value)| {
                let value = engine
                    .decode(value.as_bytes())
                    .map_err(|e| D::Error::custom(format!("extended attribute {name:?}: {e}")))?;
                if let Some(why) = crate::engine::xattrs::refused(&name, value.len()) {
                    return Err(D::Error::custom(why));
                }
                Ok(Xattr { name, value })
            })
            .collect()
    }
}
