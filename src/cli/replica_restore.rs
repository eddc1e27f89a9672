//! `restore --latest database` and `restore --at TIME --type database` with
//! `[replication]` on: the database replayed from the replicated stream (this server's,
//! or a target's with `--from`, as it was at `--as-of` if given) into a private file,
//! then restored through the same plan, safety copy and swap as a database backup.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use vertex_backup::Config;
use vertex_backup::encryption::Identities;
use vertex_backup::engine::restore::{self, RestorePlan};
use vertex_backup::error::{Error, Result};
use vertex_backup::offsite::Remote;
use vertex_backup::replication::point::{ReplicaFile, StreamSource, prepare as replay};
use vertex_backup::replication::store::ReplicaStore;

/// Where in the stream a restore goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum StreamPoint {
    Newest,
    At(DateTime<Utc>),
}

/// The database at `point`, replayed from the local stream or from the target `from`.
pub(super) fn prepare(
    config: &Config,
    from: Option<&str>,
    point: StreamPoint,
    as_of: Option<DateTime<Utc>>,
) -> Result<ReplicaFile> {
    let store = ReplicaStore::new(
        &config.paths.backup_dir,
        config.backup.file_mode.0,
        config.backup.dir_mode.0,
    );
    let at = match point {
        StreamPoint::Newest => None,
        StreamPoint::At(t) => Some(t),
    };
    let Some(name) = from else {
        return replay(&store, StreamSource::Local, at);
    };
    let target = config
        .offsite
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::Refused(format!("`{name}` is not an [[offsite]] target")))?;
    let remote = match as_of {
        Some(t) => Remote::open_as_of(config, target, t)?,
        None => Remote::open(config, target)?,
    };
    let identities = config
        .identity
        .as_deref()
        .map(Identities::load)
        .transpose()
        .map_err(|e| Error::decrypt(config.identity.as_deref().unwrap_or(Path::new("")), e))?;
    let err = |op: &str, e| remote.error(op, e);
    replay(
        &store,
        StreamSource::Target {
            target: remote.target.as_ref(),
            identities: identities.as_ref(),
            err: &err,
        },
        at,
    )
}

/// The restore plan for a replayed database.
pub(super) fn plan(
    config: &Config,
    file: &ReplicaFile,
    target: Option<&Path>,
) -> Result<RestorePlan> {
    let r = &file.restored;
    let as_of = r.as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    restore::plan_database_file(
        config,
        &file.path,
        PathBuf::from(format!("the replicated database as of {as_of}")),
        target,
        format!(
            "replayed from the replicated stream (generation {}, {} transactions, the last read at {as_of}) and checked by integrity_check before this plan",
            r.generation, r.transactions
        ),
    )
}
