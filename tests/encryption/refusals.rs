//! An encrypted backup that cannot be opened — no identity, a stranger's key, a
//! truncated file, a flipped byte in the age header or in the body — is refused by
//! `restore` with the matching message and a non-zero exit, and the live database and
//! storage are byte for byte what they were. The damaged files get their metadata's
//! checksum refreshed, so what refuses them is age's authentication, not the checksum.

use super::*;

/// What is done to the backup before the restore, and what the refusal must say.
#[derive(Debug, Clone, Copy)]
enum Damage {
    NoIdentity,
    StrangersKey,
    Truncated,
    HeaderByte,
    BodyByte,
}

impl Damage {
    const ALL: [Damage; 5] = [
        Damage::NoIdentity,
        Damage::StrangersKey,
        Damage::Truncated,
        Damage::HeaderByte,
        Damage::BodyByte,
    ];

    fn message(self) -> &'static str {
        match self {
            Damage::NoIdentity => "no identity was given",
            Damage::StrangersKey => "none of the identity's keys opens it",
            Damage::HeaderByte => "its age header is damaged",
            Damage::Truncated | Damage::BodyByte => {
                "its ciphertext is truncated or was tampered with"
            }
        }
    }

    /// Damage `file` and return the identity to restore with.
    fn apply<'a>(self, file: &Path, keys: &'a Keys) -> Option<&'a Path> {
        let len = fs::metadata(file).unwrap().len();
        match self {
            Damage::NoIdentity => return None,
            Damage::StrangersKey => return Some(&keys.stranger),
            Damage::Truncated => {
                let f = fs::OpenOptions::new().write(true).open(file).unwrap();
                f.set_len(len - 100).unwrap();
            }
            Damage::HeaderByte => {
                // A byte of the header's MAC (the `--- ` line).
                let bytes = fs::read(file).unwrap();
                let mac = bytes.windows(5).position(|w| w == b"\n--- ").unwrap() + 6;
                flip_byte(file, mac as u64);
            }
            Damage::BodyByte => flip_byte(file, len - 200),
        }
        Some(&keys.operator)
    }
}

#[test]
fn undecryptable_backups_are_refused_before_anything_live_changes() {
    for kind in ["database", "storage"] {
        for damage in Damage::ALL {
            let (app, keys) = encrypted_app();
            build_tree(&app);
            let meta = app.create(kind);
            let file = data_path(&meta);
            let identity = damage.apply(&file, &keys);
            refresh_checksum(&app, &meta);
            change_db(&app);
            change_tree(&app);
            let before = live(&app);
            let what = format!("{kind}, {damage:?}");
            let r = restore_with(&app, identity, &file, &[]);
            assert_ne!(r.code(), Some(0), "{what}: {}", r.describe());
            assert!(
                r.stderr.contains("cannot decrypt"),
                "{what}: {}",
                r.describe()
            );
            assert!(
                r.stderr.contains(damage.message()),
                "{what}: {}",
                r.describe()
            );
            assert_live_unchanged(&app, &before, &what);
            assert!(
                plaintext_files(&app).is_empty(),
                "{what}: {:?}",
                plaintext_files(&app)
            );
        }
    }
}

#[test]
fn a_damaged_encrypted_backup_fails_its_checksum_without_a_key() {
    let (app, keys) = encrypted_app();
    let meta = app.create("storage");
    let file = data_path(&meta);
    Damage::BodyByte.apply(&file, &keys);
    // No key needed to see the stored bytes changed; nor, with one, is the archive read.
    for identity in [None, Some(keys.operator.as_os_str())] {
        let mut args: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(id) = identity {
            args.extend(["--identity".as_ref(), id]);
        }
        args.extend(["verify".as_ref(), file.as_os_str()]);
        let v = app.run(args);
        v.assert_code(1);
        assert!(v.stdout.contains("checksum"), "{}", v.describe());
    }
    let before = live(&app);
    let r = restore_with(&app, Some(&keys.operator), &file, &[]);
    assert_ne!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stderr.contains("checksum"), "{}", r.describe());
    assert_live_unchanged(&app, &before, "flipped byte, checksum not refreshed");
}
