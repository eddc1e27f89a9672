use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config> {
    Config::parse(
        text,
        Some(PathBuf::from("/etc/vb.toml")),
        Path::new("/srv/app"),
        &no_env,
    )
}

fn line_of_err(e: &Error) -> Option<usize> {
    match e {
        Error::Config { line, .. } => *line,
        _ => None,
    }
}

#[test]
fn defaults_are_the_seeds() {
    let c = parse("").unwrap();
    assert_eq!(
        c.paths.database,
        PathBuf::from("/srv/app/app_data/app_data.db")
    );
    assert_eq!(c.paths.storage, PathBuf::from("/srv/app/storage"));
    assert_eq!(c.paths.backup_dir, PathBuf::from("/srv/app/backups"));
    assert_eq!(c.retention.keep_last, 7);
    assert_eq!(c.backup.compression, Compression::Zstd);
    assert_eq!(c.schedule.full.expression(), "0 2 * * *");
    assert_eq!(c.schedule.database.expression(), "0 */6 * * *");
    assert_eq!(c.schedule.storage.expression(), "0 3 * * 0");
    assert_eq!(c.schedule.rotate.expression(), "0 4 * * *");
    assert_eq!(c.backup.min_free_space, ByteSize(1 << 30));
    assert!(c.telegram.bot_token.is_none());
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = parse("[paths]\ndatabase = \"a.db\"\n\n[backup]\ncompresion = \"zstd\"\n").unwrap_err();
    assert_eq!(line_of_err(&e), Some(5));
    let msg = e.to_string();
    assert!(msg.contains("compresion"), "{msg}");
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn bad_cron_names_line() {
    let e = parse("[schedule]\nfull = \"0 2 * * *\"\ndatabase = \"0 99 * * *\"\n").unwrap_err();
    assert_eq!(line_of_err(&e), Some(3));
    assert!(e.to_string().contains("0 99 * * *"), "{e}");
}

#[test]
fn bad_values_are_rejected_with_line() {
    for (text, line) in [
        ("[backup]\ncompression = \"lz4\"\n", 2),
        ("[backup]\nmin_free_space = \"3 parsecs\"\n", 2),
        ("[schedule]\ntimezone = \"Mars/Olympus\"\n", 2),
        ("[retention]\n\nkeep_last = 0\n", 3),
        (
            "[backup]\ncompression = \"gzip\"\ncompression_level = 12\n",
            3,
        ),
        ("[telegram]\nnotify_on = [\"failure\", \"sometimes\"]\n", 2),
        ("[backup]\nexclude = [\"[unclosed\"]\n", 2),
        ("[api]\nlisten = \"not an address\"\n", 2),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(line_of_err(&e), Some(line), "{text}: {e}");
        assert!(e.is_usage());
    }
}

#[test]
fn backup_dir_inside_storage_is_rejected() {
    let e = parse("[paths]\nstorage = \"media\"\nbackup_dir = \"media/../media/backups\"\n")
        .unwrap_err();
    assert_eq!(line_of_err(&e), Some(3));
    assert!(
        e.to_string().contains("inside the storage directory"),
        "{e}"
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let c =
        parse("[paths]\ndatabase = \"../data/x.db\"\nbackup_dir = \"/var/backups/vx\"\n").unwrap();
    assert_eq!(c.paths.database, PathBuf::from("/srv/data/x.db"));
    assert_eq!(c.paths.backup_dir, PathBuf::from("/var/backups/vx"));
}

#[test]
fn environment_fills_telegram_and_api_tokens() {
    let env = |k: &str| match k {
        "TELEGRAM_BOT_TOKEN" => Some("123:abc".to_string()),
        "TELEGRAM_CHAT_ID" => Some("42, -100123".to_string()),
        "VERTEX_BACKUP_API_TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    let c = Config::parse("", None, Path::new("/x"), &env).unwrap();
    assert_eq!(
        c.telegram.bot_token.as_ref().map(Secret::expose),
        Some("123:abc")
    );
    assert_eq!(c.telegram.chat_ids, vec![42, -100123]);
    assert_eq!(c.api.token.as_ref().map(Secret::expose), Some("s3cret"));
    assert!(
        !format!("{c:?}").contains("123:abc"),
        "Debug must not print secrets"
    );
}

#[test]
fn file_values_win_over_environment() {
    let env = |k: &str| (k == "TELEGRAM_BOT_TOKEN").then(|| "from-env".to_string());
    let c = Config::parse(
        "[telegram]\nbot_token = \"from-file\"\n",
        None,
        Path::new("/x"),
        &env,
    )
    .unwrap();
    assert_eq!(
        c.telegram.bot_token.as_ref().map(Secret::expose),
        Some("from-file")
    );
}

#[test]
fn the_documented_example_parses() {
    let text = include_str!("../../config/vertex-backup.toml");
    let c = Config::parse(text, None, Path::new("/srv/app/config"), &no_env).unwrap();
    assert_eq!(c.retention.keep_last, 7);
}

/// Issue 13, item 7: every duration and size key is range-checked at load, naming the key
/// and its line (`busy_timeout = "30d"` used to pass and then panic inside SQLite).
#[test]
fn every_duration_and_size_key_out_of_range_names_key_and_line() {
    for (text, key) in [
        ("[backup]\nbusy_timeout = \"30d\"\n", "backup.busy_timeout"),
        (
            "[backup]\nmin_free_space = \"2000 TiB\"\n",
            "backup.min_free_space",
        ),
        (
            "[retention]\nkeep_within = \"0s\"\n",
            "retention.keep_within",
        ),
        (
            "[schedule]\nshutdown_grace = \"400d\"\n",
            "schedule.shutdown_grace",
        ),
        (
            "[alerts]\nmax_age = { full = \"100000d\" }\n",
            "alerts.max_age.full",
        ),
        (
            "[alerts]\nmax_age = { database = \"0s\" }\n",
            "alerts.max_age.database",
        ),
        (
            "[alerts]\nmax_age = { storage = \"0s\" }\n",
            "alerts.max_age.storage",
        ),
        ("[telegram]\ntimeout = \"0s\"\n", "telegram.timeout"),
        ("[hooks]\ntimeout = \"1000y\"\n", "hooks.timeout"),
    ] {
        let e = parse(&format!("# range\n{text}")).unwrap_err();
        let msg = e.to_string();
        assert_eq!(line_of_err(&e), Some(3), "{text}: {msg}");
        assert!(msg.contains(&format!("`{key}`")), "{text}: {msg}");
        assert!(msg.contains("out of range"), "{text}: {msg}");
    }
    // The bounds themselves are accepted.
    parse("[backup]\nbusy_timeout = \"1h\"\nmin_free_space = \"1024 TiB\"\n[hooks]\ntimeout = \"1d\"\n")
        .unwrap();
}

#[test]
fn chat_ids_accept_channel_usernames_and_negative_group_ids() {
    use super::ChatRef;
    let c = parse("[telegram]\nchat_ids = [42, -1001234567890, \"@vertex_ops\", \"-100987\"]\n");
    let c = c.expect("valid chat ids");
    assert_eq!(
        c.telegram.chat_ids,
        vec![
            ChatRef::Id(42),
            ChatRef::Id(-1001234567890),
            ChatRef::Channel("@vertex_ops".into()),
            ChatRef::Id(-100987),
        ]
    );
    assert!(
        !c.telegram.commands,
        "chat commands are off unless asked for"
    );
}

#[test]
fn a_wrong_chat_id_names_the_key_and_the_forms() {
    for bad in ["[1.5]", "[\"vertex_ops\"]", "[\"@ab\"]", "[true]"] {
        let e = parse(&format!("[telegram]\nchat_ids = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chat_ids"), "{bad}: {e}");
        assert!(
            e.contains("-1001234567890") && e.contains("@username"),
            "{bad}: {e}"
        );
    }
}
