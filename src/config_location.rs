//! Where the config file is looked for when `--config` is not given: read by the config
//! loader and by the error that says no file was found (which `config` itself imports).

/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/vertex-backup/config.toml";
/// The environment variable naming a config file.
pub const CONFIG_ENV: &str = "VERTEX_BACKUP_CONFIG";
