//! Replaying committed WAL transactions onto a copy of the database: what a restore to a
//! point in time does after laying down a base copy, and what checkpointing does to the
//! database file itself — each page written at its place, then the file cut to the size
//! the commit recorded (a transaction may shrink the database: `VACUUM`, auto-vacuum).
//!
//! The copy is written in place; a restore works on a private file that is checked
//! (`integrity_check`) before anything live is touched.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use thiserror::Error;

use super::wal::Transaction;

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("writing the database copy: {0}")]
    Io(#[from] std::io::Error),
    #[error("a transaction does not fit the database: {0}")]
    Invalid(String),
}

/// A database file being brought forward one transaction at a time.
pub struct Replica {
    file: File,
    page_size: u32,
    /// The file's size in pages.
    pages: u64,
}

impl Replica {
    /// Opens `path` (an existing database copy, or a new empty file for a log that
    /// starts from nothing) for replaying transactions of `page_size`-byte pages.
    pub fn open(path: &Path, page_size: u32) -> Result<Replica, ApplyError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len % u64::from(page_size) != 0 {
            return Err(ApplyError::Invalid(format!(
                "{} is {len} bytes, not a whole number of {page_size}-byte pages",
                path.display()
            )));
        }
        Ok(Replica {
            file,
            page_size,
            pages: len / u64::from(page_size),
        })
    }

    /// Writes one transaction's pages and sets the size its commit recorded. A page must
    /// be whole and lie within the database as it was or as it becomes: a number past
    /// both is damage, refused before anything of the transaction is written.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), ApplyError> {
        for p in &tx.pages {
            self.check_page(p.page, &p.data, tx.db_pages)?;
        }
        if tx.db_pages == 0 {
            return Err(ApplyError::Invalid("a commit of an empty database".into()));
        }
        for p in &tx.pages {
            self.write_page(p.page, &p.data, tx.db_pages)?;
        }
        self.set_pages(tx.db_pages)
    }

    fn check_page(&self, page: u32, data: &[u8], db_pages: u32) -> Result<(), ApplyError> {
        let limit = self.pages.max(u64::from(db_pages));
        if data.len() != self.page_size as usize {
            return Err(ApplyError::Invalid(format!(
                "page {page} holds {} bytes, not {}",
                data.len(),
                self.page_size
            )));
        }
        if page == 0 || u64::from(page) > limit {
            return Err(ApplyError::Invalid(format!(
                "page {page} lies past the database's {limit} pages"
            )));
        }
        Ok(())
    }

    /// One page of a record whose commit makes the database `db_pages` long, written at
    /// once (a replay into a private file, removed whole if anything fails after), with
    /// the same checks as [`Replica::apply`].
    pub fn write_page(&mut self, page: u32, data: &[u8], db_pages: u32) -> Result<(), ApplyError> {
        self.check_page(page, data, db_pages)?;
        let size = u64::from(self.page_size);
        self.file.write_all_at(data, (u64::from(page) - 1) * size)?;
        Ok(())
    }

    /// The size a record's commit recorded, after its pages.
    pub fn set_pages(&mut self, db_pages: u32) -> Result<(), ApplyError> {
        if db_pages == 0 {
            return Err(ApplyError::Invalid("a commit of an empty database".into()));
        }
        let pages = u64::from(db_pages);
        self.file.set_len(pages * u64::from(self.page_size))?;
        self.pages = pages;
        Ok(())
    }

    /// Makes what was applied durable.
    pub fn sync(&self) -> Result<(), ApplyError> {
        self.file.sync_all()?;
        Ok(())
    }
}
