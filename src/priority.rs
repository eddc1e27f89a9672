//! The CPU and I/O priority a backup runs at (`[backup] nice`, `io_class`), so a backup of
//! tens of GB does not starve the app sharing the machine's disk. Both are per thread on
//! Linux (`setpriority` on the thread id, `ioprio_set` with `IOPRIO_WHO_PROCESS` and id 0
//! = the calling thread), and threads and hooks spawned afterwards inherit them: the CLI
//! sets them once on its main thread at start, the daemon on the job's thread for the
//! job's duration ([`JobPriority`] puts the previous values back).

use crate::config::{BackupSection, IoClass};

/// `IOPRIO_WHO_PROCESS` (linux/ioprio.h): the id names a thread; 0 = the calling one.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;
const IOPRIO_CLASS_BE: u32 = 2;
const IOPRIO_CLASS_IDLE: u32 = 3;
/// The lowest best-effort level (0 is the highest): `best-effort` means "behind the app".
const BEST_EFFORT_LOWEST: u32 = 7;

/// The priority `[backup]` asks for; `None` fields leave that one alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Priority {
    pub nice: Option<i32>,
    pub io_class: Option<IoClass>,
}

impl From<&BackupSection> for Priority {
    fn from(b: &BackupSection) -> Self {
        Priority {
            nice: b.nice,
            io_class: b.io_class,
        }
    }
}

impl Priority {
    pub fn is_default(&self) -> bool {
        self.nice.is_none() && self.io_class.is_none()
    }
}

/// The `ioprio` value of a class (linux/ioprio.h `IOPRIO_PRIO_VALUE`).
fn ioprio_value(class: IoClass) -> libc::c_int {
    let (class, level) = match class {
        IoClass::Idle => (IOPRIO_CLASS_IDLE, 0),
        IoClass::BestEffort => (IOPRIO_CLASS_BE, BEST_EFFORT_LOWEST),
    };
    ((class << IOPRIO_CLASS_SHIFT) | level) as libc::c_int
}

fn current_tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as libc::id_t }
}

/// The calling thread's niceness, or `None` when it cannot be read.
fn current_nice() -> Option<i32> {
    // getpriority may legitimately return -1, so errno tells a failure apart.
    // SAFETY: errno is thread-local; getpriority has no memory preconditions.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, current_tid());
        (*libc::__errno_location() == 0).then_some(n)
    }
}

fn set_nice(n: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on the calling thread's id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, current_tid(), n) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's raw `ioprio` value, or `None` when it cannot be read.
fn current_ioprio() -> Option<libc::c_int> {
    // SAFETY: ioprio_get takes two integers and returns one.
    let v = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
    (v >= 0).then_some(v as libc::c_int)
}

fn set_ioprio(value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: ioprio_set takes three integers; who = 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Apply `p` to the calling thread (and what it spawns from now on). Each failure is a
/// sentence for a warning: a backup at the normal priority is still a backup.
pub fn apply_to_current_thread(p: Priority) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(n) = p.nice
        && let Err(e) = set_nice(n)
    {
        problems.push(format!("cannot set the backup's nice to {n}: {e}"));
    }
    if let Some(class) = p.io_class
        && let Err(e) = set_ioprio(ioprio_value(class))
    {
        problems.push(format!(
            "cannot set the backup's I/O class to {class:?}: {e}"
        ));
    }
    problems
}

/// A job thread's priority for one job: applied on creation, the previous one put back
/// on drop — the daemon's blocking threads are pooled and serve other work afterwards.
#[derive(Debug)]
pub struct JobPriority {
    previous_nice: Option<i32>,
    previous_ioprio: Option<libc::c_int>,
}

impl JobPriority {
    /// Apply `p` to the calling thread; the problems (as from [`apply_to_current_thread`])
    /// come back with the guard.
    pub fn apply(p: Priority) -> (JobPriority, Vec<String>) {
        let guard = JobPriority {
            previous_nice: p.nice.and(current_nice()),
            previous_ioprio: p.io_class.and(current_ioprio()),
        };
        (guard, apply_to_current_thread(p))
    }
}

impl Drop for JobPriority {
    fn drop(&mut self) {
        // Lowering niceness again needs CAP_SYS_NICE: unprivileged, the pooled thread
        // stays at the backup's priority, which only slows it, never breaks it.
        if let Some(n) = self.previous_nice
            && let Err(e) = set_nice(n)
        {
            tracing::debug!("cannot restore the job thread's nice {n}: {e}");
        }
        if let Some(v) = self.previous_ioprio
            && let Err(e) = set_ioprio(v)
        {
            tracing::debug!("cannot restore the job thread's I/O priority: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioprio_values_match_the_kernel_encoding() {
        assert_eq!(ioprio_value(IoClass::Idle), 3 << 13);
        assert_eq!(ioprio_value(IoClass::BestEffort), (2 << 13) | 7);
    }

    #[test]
    fn a_job_priority_applies_to_its_thread_and_is_put_back() {
        std::thread::spawn(|| {
            let before = (current_nice(), current_ioprio());
            let wanted = Priority {
                nice: Some(before.0.unwrap_or(0).max(10)),
                io_class: Some(IoClass::Idle),
            };
            let (guard, problems) = JobPriority::apply(wanted);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(current_nice(), wanted.nice);
            assert_eq!(current_ioprio(), Some(ioprio_value(IoClass::Idle)));
            drop(guard);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                assert_eq!((current_nice(), current_ioprio()), before);
            }
        })
        .join()
        .unwrap();
    }
}
