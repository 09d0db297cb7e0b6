//! Who holds a claim in a SQLite log, and whether it is still alive.
//!
//! Processes sharing one SQLite file may not share a process-id space
//! (containers with the file on a shared volume each have their own), so a
//! process id says nothing about a claim's holder. Instead each
//! [`SqliteLog`](super::SqliteLog) picks a random holder id and holds an
//! exclusive lock (`flock` on Unix, `LockFileEx` on Windows) on the file
//! `<id>.lock` in the directory `<log file>-holders` for as long as it
//! runs; its claims name that id. The operating system drops the lock when
//! the process ends, however it ends, and every process that can open the
//! directory sees the same lock whatever its namespaces. So a claim's holder
//! is gone exactly when its lock file can be locked by someone else (or is
//! no longer there): its claims are then taken over at once instead of
//! holding their notifications back until their leases lapse.
//!
//! A lock file appears only once it is locked (written as `<id>.new`,
//! locked, renamed), so a file without its lock is a dead holder's: the
//! next log to open deletes it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// This log's holder id, and where every holder's lock file is.
pub(super) struct Holders {
    dir: PathBuf,
    own: String,
}

/// The lock that keeps this log's holder id alive; held by its writer
/// thread, released when the thread ends or the process dies.
pub(super) struct HolderLock {
    _file: File,
}

impl Holders {
    /// Takes a new holder id for the log at `log`, locking its file, and
    /// deletes the lock files of holders that are gone.
    pub fn register(log: &Path) -> io::Result<(Holders, HolderLock)> {
        let mut name = log.as_os_str().to_owned();
        name.push("-holders");
        let dir = PathBuf::from(name);
        labrelay_runtime::private_fs::create_dir_all(&dir)?;
        sweep(&dir);
        let own = format!("{:032x}", rand::random::<u128>());
        let new = dir.join(format!("{own}.new"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&new)?;
        file.try_lock().map_err(io::Error::from)?;
        std::fs::rename(&new, dir.join(format!("{own}.lock")))?;
        Ok((Holders { dir, own }, HolderLock { _file: file }))
    }

    /// The holder id that this log's claims name.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Whether `holder`'s claims may be taken over before their leases
    /// lapse: its lock file is gone or can be locked. An empty id (a claim
    /// written before holders had lock files) or a lock that cannot be
    /// tried is taken for alive: its lease stands.
    pub fn is_gone(&self, holder: &str) -> bool {
        if holder == self.own || holder.is_empty() || !holder.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return false;
        }
        let path = self.dir.join(format!("{holder}.lock"));
        match File::open(&path) {
            Err(error) => error.kind() == io::ErrorKind::NotFound,
            Ok(file) => {
                let gone = file.try_lock().is_ok();
                if gone {
                    // Deleted while locked: nobody takes it for alive.
                    let _ = std::fs::remove_file(&path);
                }
                gone
            }
        }
    }
}

/// Deletes the lock files (`*.lock`) nobody holds. Best effort: a file
/// that cannot be opened, locked or deleted stays.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock")
            && let Ok(file) = File::open(&path)
            && file.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_alive_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.sqlite3");
        let (a, a_lock) = Holders::register(&log).unwrap();
        let (b, b_lock) = Holders::register(&log).unwrap();
        assert_ne!(a.own(), b.own());
        assert!(!a.is_gone(b.own()) && !b.is_gone(a.own()));
        assert!(!a.is_gone(a.own()), "its own claims are alive");
        assert!(!a.is_gone(""), "an unknown holder is taken for alive");
        assert!(!a.is_gone("../elsewhere"), "not a holder id");
        drop(b_lock);
        assert!(a.is_gone(b.own()));
        assert!(
            !dir.path()
                .join(format!("log.sqlite3-holders/{}.lock", b.own()))
                .exists(),
            "the dead holder's file is deleted"
        );
        assert!(a.is_gone(b.own()), "and without its file it stays gone");
        drop(a_lock);
    }

    #[test]
    fn opening_deletes_the_files_of_holders_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.sqlite3");
        let (gone, lock) = Holders::register(&log).unwrap();
        drop(lock);
        let (alive, _alive_lock) = Holders::register(&log).unwrap();
        let (_third, _third_lock) = Holders::register(&log).unwrap();
        let files = |id: &str| dir.path().join(format!("log.sqlite3-holders/{id}.lock"));
        assert!(!files(gone.own()).exists());
        assert!(files(alive.own()).exists(), "a live holder's file stays");
    }
}
