//! `backup.log`: one line per operation, appended, in the seed's spirit — operators grep
//! it for `Backup completed successfully` and `ERROR`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

pub const LOG_FILE: &str = "backup.log";

#[derive(Debug, Clone)]
pub struct OperationLog {
    path: PathBuf,
    mode: u32,
}

impl OperationLog {
    pub fn new(path: PathBuf, mode: u32) -> Self {
        OperationLog { path, mode }
    }

    pub fn info(&self, message: &str) {
        self.append("INFO", message);
    }
    pub fn warn(&self, message: &str) {
        self.append("WARNING", message);
    }
    pub fn error(&self, message: &str) {
        self.append("ERROR", message);
    }

    /// Append one line. Failing to log never fails the operation itself: the result is
    /// still reported on stderr, in the state file and as an event.
    fn append(&self, level: &str, message: &str) {
        let line = format!(
            "{} - {level} - {}\n",
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S%:z"),
            message.replace('\n', " ")
        );
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(self.mode)
            .open(&self.path);
        if let Ok(mut f) = file {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
