//! Files only the operator can read: the data directory and what is in it
//! (stores, journals, notification logs, outboxes, keys) hold lab reports,
//! addresses, phone numbers and credentials.
//!
//! Every mode is set explicitly (directories 0700, files 0600) instead of
//! relying on the process umask: the umask is the invoking shell's (often
//! 022), and a library cannot change it without changing it for every
//! thread of the process. Files and directories that exist with group or
//! other bits are tightened, never loosened, and each change is logged
//! once with its path and old and new modes, so an operator upgrading an
//! old data directory sees what changed.
//!
//! A symlink is never followed to change a mode or to write a key: a
//! symlink inside the data directory is left alone by [`tighten_tree`],
//! refused by [`read_private`], and replaced (not written through) by
//! [`write_atomic`].
//!
//! On platforms without Unix modes these create and write files as usual
//! and change nothing else.

use std::io::{self, Write as _};
use std::path::Path;

/// Group and other permission bits: what tightening removes.
#[cfg(unix)]
const LOOSE: u32 = 0o077;

/// Creates `path` and its missing parents as directories only the owner
/// can use (0700). Existing directories are left as they are; see
/// [`private_dir`].
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// [`create_dir_all`], then [`tighten`] on `path` itself, for a directory
/// that is labrelay's own (the data directory, the broker's directory). A
/// shared directory (sticky bit, like `/tmp`) is refused rather than
/// taken from its other users.
pub fn private_dir(path: &Path) -> io::Result<()> {
    create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if std::fs::metadata(path)?.permissions().mode() & 0o1000 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a shared directory (sticky bit set); give labrelay a directory of its own",
                    path.display()
                ),
            ));
        }
    }
    tighten(path)
}

/// Removes group and other permissions from `path` (a directory or a
/// regular file, not followed if it is a symlink), logging the change.
/// A missing path, a symlink or another kind of file is left alone.
pub fn tighten(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        tighten_unix(path, &meta)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// [`tighten`] on `root` and everything under it, without following
/// symlinks.
pub fn tighten_tree(root: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let meta = match std::fs::symlink_metadata(root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        tighten_unix(root, &meta)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(root)? {
                tighten_tree(&entry?.path())?;
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        Ok(())
    }
}

/// Changes the mode through a descriptor opened on what `meta` describes,
/// so that a path swapped for a symlink after `meta` was read changes
/// nothing elsewhere.
#[cfg(unix)]
fn tighten_unix(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let old = meta.mode() & 0o7777;
    if old & LOOSE == 0 || !(meta.is_dir() || meta.is_file()) {
        return Ok(());
    }
    let new = old & !LOOSE;
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(io::Error::other(format!(
            "{} changed while its permissions were being tightened",
            path.display()
        )));
    }
    file.set_permissions(std::fs::Permissions::from_mode(new))?;
    tracing::info!(
        path = %path.display(),
        old_mode = format!("{old:04o}"),
        new_mode = format!("{new:04o}"),
        "tightened permissions: only the owner may read labrelay's data"
    );
    Ok(())
}

/// Makes the SQLite database at `path` (creating it empty if missing) and
/// its `-wal`, `-shm` and `-journal` files owner-only before SQLite opens
/// it. SQLite's unix VFS creates the `-wal` and `-shm` files with the
/// database file's mode, so a 0600 database keeps them 0600 too; a
/// database SQLite created itself would be 0644 under the usual umask.
pub fn prepare_sqlite(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    // Opened to create it, never to write: an existing file is untouched.
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    tighten(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        tighten(Path::new(&side))?;
    }
    Ok(())
}

/// Reads the owner-only file at `path`: `None` if it does not exist. A
/// symlink is refused (a key is never read through one); a file with
/// group or other permissions is tightened first.
pub fn read_private(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symlink; labrelay keeps its keys in regular files only: \
                 remove it (a new key is generated) or replace it with the file itself",
                path.display()
            ),
        ));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    #[cfg(unix)]
    tighten_unix(path, &meta)?;
    let mut file = std::fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let opened = file.metadata()?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(io::Error::other(format!(
                "{} changed while it was being read",
                path.display()
            )));
        }
    }
    let mut contents = Vec::new();
    io::Read::read_to_end(&mut file, &mut contents)?;
    Ok(Some(contents))
}

/// Writes `contents` to `path` (mode 0600) through a new temporary file in
/// the same directory, synced and renamed over `path`, then syncs the
/// directory: a crash leaves the old file or the new one, never half of
/// one, and a symlink at `path` is replaced, not written through.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{:016x}.tmp", random_u64()));
    let tmp = path.with_file_name(tmp_name);
    let written = write_new(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path)
}

fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    // `create_new` never opens an existing file or follows a symlink.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The rename is durable only once the directory entry is.
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}

/// Directories cannot be opened for syncing everywhere; the rename is
/// still atomic.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Distinct enough that two writers never pick the same temporary name
/// (and `create_new` refuses it if they do).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn new_directories_are_owner_only_and_existing_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o755);
        create_dir_all(&open).unwrap();
        assert_eq!(mode(&open), 0o755, "create_dir_all leaves existing ones");
        private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        set_mode(&shared, 0o1777);
        let refused = private_dir(&shared).unwrap_err();
        assert!(refused.to_string().contains("shared"), "{refused}");
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn tighten_tree_removes_group_and_other_bits_and_follows_no_symlink() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/store"), "x").unwrap();
        std::fs::write(dir.join("owner-read-only"), "x").unwrap();
        set_mode(&dir, 0o755);
        set_mode(&dir.join("sub"), 0o775);
        set_mode(&dir.join("sub/store"), 0o664);
        set_mode(&dir.join("owner-read-only"), 0o444);
        let outside = root.path().join("outside");
        std::fs::write(&outside, "not ours").unwrap();
        set_mode(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        tighten_tree(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&dir.join("sub/store")), 0o600);
        assert_eq!(mode(&dir.join("owner-read-only")), 0o400, "never loosened");
        assert_eq!(mode(&outside), 0o644, "a symlink's target is not ours");
        tighten_tree(&root.path().join("missing")).unwrap();
    }

    #[test]
    fn sqlite_files_are_created_owner_only_and_sqlite_keeps_them_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let wal = dir.path().join("db.sqlite3-wal");
        std::fs::write(&wal, "").unwrap();
        set_mode(&wal, 0o644);
        prepare_sqlite(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&wal), 0o600);
        std::fs::remove_file(&wal).unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        for file in ["db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        let written: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(written, 1);
    }

    #[test]
    fn keys_are_written_whole_owner_only_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        assert_eq!(read_private(&key).unwrap(), None);
        write_atomic(&key, b"one").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(read_private(&key).unwrap().unwrap(), b"one");
        set_mode(&key, 0o644);
        assert_eq!(read_private(&key).unwrap().unwrap(), b"one");
        assert_eq!(mode(&key), 0o600, "read_private tightens");

        let target = dir.path().join("target");
        std::fs::write(&target, "theirs").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let refused = read_private(&link).unwrap_err();
        assert!(refused.to_string().contains("symlink"), "{refused}");
        write_atomic(&link, b"ours").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    }
}
