//! `check-config`'s part about the app under Docker or Podman: the engine it reaches, the
//! volumes the live paths resolve to, and the labelled containers with the jobs that stop
//! each (a label value that names no job is a warning: that container is never stopped).

use vertex_backup::Config;
use vertex_backup::config::LiveCheck;
use vertex_backup::docker::{AppContainers, label_applies, resolve_volumes};
use vertex_backup::engine::live_app::StopFor;
use vertex_backup::kind::BackupKind;

const JOBS: [StopFor; 3] = [
    StopFor::Backup(BackupKind::Storage),
    StopFor::Backup(BackupKind::Full),
    StopFor::Restore,
];

/// Print the engine's view and add what is wrong to `live`.
pub(super) fn check(config: &Config, live: &mut LiveCheck) {
    let Some(settings) = &config.docker else {
        return;
    };
    out!("\ncontainer engine {}:", settings.host);
    let containers = match AppContainers::new(
        settings,
        config.paths.backup_dir.clone(),
        config.backup.file_mode.0,
    ) {
        Ok(c) => c,
        Err(e) => return live.problems.push(e),
    };
    if let Err(e) = containers.api().ping() {
        out!("  not reachable");
        return live.problems.push(e);
    }
    match resolve_volumes(config, containers.api()) {
        Ok(volumes) => {
            for v in volumes {
                out!("  {:<14} {} → {}", v.key, v.volume, v.path.display());
            }
        }
        Err(e) => live.problems.push(e),
    }
    match containers.labelled(StopFor::Restore) {
        Ok(labelled) if labelled.is_empty() => out!(
            "  no container carries the label {} (nothing is stopped during backups)",
            settings.stop_label
        ),
        Ok(labelled) => {
            out!("  containers labelled {}:", settings.stop_label);
            for (c, _) in labelled {
                let jobs: Vec<&str> = JOBS
                    .iter()
                    .filter(|j| label_applies(&c.label, **j))
                    .map(|j| j.as_str())
                    .collect();
                if jobs.is_empty() {
                    live.warnings.push(format!(
                        "the container `{}` has {}={:?}, which names no job (true, or a list of storage, full, restore): it is never stopped",
                        c.name, settings.stop_label, c.label
                    ));
                }
                out!(
                    "    {:<24} {:<10} stopped for: {}",
                    c.name,
                    c.state,
                    if jobs.is_empty() {
                        "nothing".to_string()
                    } else {
                        jobs.join(", ")
                    }
                );
            }
        }
        Err(e) => live.problems.push(e),
    }
}
