//! The `[encryption]` section (docs/design.md §5): the age public keys backups are encrypted to
//! (`recipients`, or a `recipients_file`), what is encrypted (`encrypt`: what leaves the
//! server, or every backup), and — only on a restore-test host, never on the production
//! server — an `identity_file` the scheduled drill may decrypt with.

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;
use crate::encryption::Recipients;
use crate::error::Error;

/// What is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptWhat {
    /// Every object written to an offsite target (the default with recipients).
    Offsite,
    /// Local backups too (`….age`).
    All,
}

/// `[encryption]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSection {
    /// age X25519 public keys (`age1…`): the operator's, an escrow key kept elsewhere.
    pub recipients: Vec<String>,
    /// A file with one public key per line (`#` comments allowed), instead of or besides
    /// `recipients`.
    pub recipients_file: Option<PathBuf>,
    /// `offsite` (default when there are recipients) or `all`.
    pub encrypt: Option<EncryptWhat>,
    /// An identity the daemon's drill decrypts with: for a restore-test host only.
    pub identity_file: Option<PathBuf>,
}

/// The checked section: recipients parsed, or `None` when nothing is encrypted.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub recipients: Recipients,
    pub encrypt: EncryptWhat,
    pub identity_file: Option<PathBuf>,
}

impl Encryption {
    /// Whether local backups are encrypted too.
    pub fn local(&self) -> bool {
        self.encrypt == EncryptWhat::All
    }
}

impl Config {
    /// The recipients local backups are encrypted to (`encrypt = "all"`), if they are.
    pub fn local_recipients(&self) -> Option<&Recipients> {
        self.encryption
            .as_ref()
            .filter(|e| e.local())
            .map(|e| &e.recipients)
    }

    /// Check `[encryption]`; recipients that do not parse, or `encrypt` without any, are
    /// errors at their key's line.
    pub(super) fn encryption_of(
        &self,
        section: &EncryptionSection,
        problems: &mut Vec<Error>,
    ) -> Option<Encryption> {
        let mut keys: Vec<String> = section.recipients.clone();
        if let Some(file) = &section.recipients_file {
            match std::fs::read_to_string(file) {
                Ok(text) => keys.extend(text.lines().map(str::to_string)),
                Err(e) => {
                    problems.push(self.key_error(
                        "encryption.recipients_file",
                        format!("cannot read {}: {e}", file.display()),
                    ));
                    return None;
                }
            }
        }
        let none_given = keys
            .iter()
            .all(|k| k.split('#').next().unwrap_or("").trim().is_empty());
        if none_given {
            if section.encrypt.is_some() {
                problems.push(self.key_error(
                    "encryption.encrypt",
                    "encryption needs recipients: add [encryption] recipients = [\"age1…\"] (public keys from `age-keygen -y`)",
                ));
            }
            return None;
        }
        let key = if section.recipients.is_empty() {
            "encryption.recipients_file"
        } else {
            "encryption.recipients"
        };
        match Recipients::parse(keys.iter().map(String::as_str)) {
            Ok(recipients) => Some(Encryption {
                recipients,
                encrypt: section.encrypt.unwrap_or(EncryptWhat::Offsite),
                identity_file: section.identity_file.clone(),
            }),
            Err(why) => {
                problems.push(self.key_error(key, why));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> crate::error::Result<Config> {
        Config::parse(text, None, Path::new("/etc/vb"), &|_| None)
    }

    #[test]
    fn recipients_default_to_encrypting_what_leaves_the_server() {
        let public = age::x25519::Identity::generate().to_public().to_string();
        let cfg = parse(&format!("[encryption]\nrecipients = [\"{public}\"]\n")).unwrap();
        let e = cfg.encryption.expect("encryption configured");
        assert_eq!(e.encrypt, EncryptWhat::Offsite);
        assert_eq!(e.recipients.fingerprints().len(), 1);
        assert!(parse("").unwrap().encryption.is_none());
    }

    #[test]
    fn encryption_without_recipients_and_bad_keys_name_the_key_and_line() {
        let err = parse("[encryption]\nencrypt = \"all\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("needs recipients"),
            "{err}"
        );
        let err = parse("\n[encryption]\nrecipients = [\"age1bogus\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("age1bogus"), "{err}");
    }
}
