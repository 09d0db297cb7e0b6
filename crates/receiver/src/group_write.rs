//! Group commit for a directory outbox: one writer thread per directory
//! makes files durable in batches.
//!
//! A file is written to a hidden temporary file in the same directory,
//! synced, renamed over its target, and the directory is synced, so a
//! reader never sees half a file and a file whose write was answered
//! survives a crash. Doing that one file at a time costs a thread hop, a
//! directory open and two syncs per file. The writer instead takes every
//! write waiting and, for the whole batch: writes the temporary files,
//! starts their writeback together (Linux `sync_file_range`, a hint), syncs
//! them on a few standing threads at once (their blocks were allocated in the same
//! journal transaction, so on ext4 they share its commit, and their device
//! flushes overlap instead of queueing), renames them into place, and
//! syncs the directory once. Only then is each caller answered, with its
//! own result: a write that fails
//! (its temporary file, its sync, its rename) fails alone and leaves no
//! temporary file behind; if the directory sync fails, every file renamed
//! in that batch is answered with the error (its rename may not survive a
//! crash, so the caller must not count it as written).
//!
//! Used by both receivers' directory outboxes (the email-service's `.eml`
//! files, the sms-service's `.json` files). They hold reports' contents, so
//! the files are 0600 (the temporary file's mode, kept by the rename) and a
//! directory created here is 0700.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// At most this many files per batch, so the first caller of a large batch
/// does not wait for all of it.
const MAX_BATCH: usize = 256;
/// The syncs of a batch run on up to this many threads (the writer's own
/// included), one per [`FILES_PER_SYNC_THREAD`] files.
const SYNC_THREADS: usize = 8;
const FILES_PER_SYNC_THREAD: usize = 4;

/// A directory written by its own thread, which stops when this is dropped.
pub struct GroupWriter {
    dir: PathBuf,
    queue: mpsc::Sender<Write>,
}

/// How a [`GroupWriter`] treats its directory.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Names of the temporary files: hidden, and never the outbox's suffix.
    pub temp_prefix: &'static str,
    pub temp_suffix: &'static str,
    /// Create the directory (0700), when it is missing, before every
    /// batch; otherwise a missing directory fails the batch.
    pub create_dir: bool,
}

struct Write {
    name: String,
    contents: Vec<u8>,
    reply: oneshot::Sender<std::io::Result<()>>,
}

/// A temporary file written for the write at this index of its batch.
type Staged = (usize, tempfile::NamedTempFile);
/// The same, with the result of its sync.
type Synced = (usize, tempfile::NamedTempFile, std::io::Result<()>);

impl GroupWriter {
    /// Starts the writer thread of `dir` and the threads it syncs on.
    pub fn start(dir: PathBuf, options: Options) -> std::io::Result<GroupWriter> {
        let (queue, writes) = mpsc::channel();
        let syncers = Syncers::start(SYNC_THREADS - 1)?;
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || run(&thread_dir, options, &syncers, &writes))?;
        Ok(GroupWriter { dir, queue })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `<dir>/<name>`, replacing any earlier file;
    /// durable when this returns `Ok`.
    pub async fn write(&self, name: String, contents: Vec<u8>) -> std::io::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write {
                name,
                contents,
                reply,
            })
            .map_err(|_| std::io::Error::other("the outbox writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the outbox writer thread stopped"))?
    }
}

/// The writer thread: commits every write waiting as one batch, until the
/// [`GroupWriter`] is dropped (its syncers stop with it).
fn run(dir: &Path, options: Options, syncers: &Syncers, writes: &mpsc::Receiver<Write>) {
    let mut batch = Vec::new();
    while let Ok(first) = writes.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let results = commit(dir, options, syncers, &batch);
        for (write, result) in batch.drain(..).zip(results) {
            // A caller that timed out is not waiting for its answer.
            let _ = write.reply.send(result);
        }
    }
}

/// Each write's result, in order.
fn commit(
    dir: &Path,
    options: Options,
    syncers: &Syncers,
    batch: &[Write],
) -> Vec<std::io::Result<()>> {
    if options.create_dir
        && let Err(err) = labrelay_runtime::private_fs::create_dir_all(dir)
    {
        return batch.iter().map(|_| Err(copy(&err))).collect();
    }
    // Temporary files written; a failed one is deleted when its handle
    // drops.
    let mut results: Vec<std::io::Result<()>> = Vec::with_capacity(batch.len());
    let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
    for (i, write) in batch.iter().enumerate() {
        let file = tempfile::Builder::new()
            .prefix(options.temp_prefix)
            .suffix(options.temp_suffix)
            .tempfile_in(dir)
            .and_then(|mut file| file.write_all(&write.contents).map(|()| file));
        match file {
            Ok(file) => {
                start_writeback(file.as_file());
                staged.push((i, file));
                // Until its sync comes back.
                results.push(Err(std::io::Error::other("the outbox sync thread stopped")));
            }
            Err(err) => results.push(Err(err)),
        }
    }
    let mut synced = syncers.sync(staged);
    // In the writes' order, so a name written twice in a batch ends with
    // the later contents.
    synced.sort_unstable_by_key(|(i, ..)| *i);
    for (i, file, synced) in synced {
        results[i] = synced.and_then(|()| {
            file.persist(dir.join(&batch[i].name))
                .map(drop)
                .map_err(|e| e.error)
        });
    }
    // Make the renames durable before anyone is told the file is written.
    if results.iter().any(Result::is_ok)
        && let Err(err) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(copy(&err));
        }
    }
    results
}

/// Threads that sync a batch's files next to the writer thread, started
/// once: each sync may wait for its own device flush, and one after another
/// they made a slow device (a loop mount, a busy disk) the limit of the
/// whole pipeline; a thread started per batch cost more than a fast
/// device's sync.
struct Syncers {
    parts: Vec<mpsc::Sender<Vec<Staged>>>,
    synced: mpsc::Receiver<Vec<Synced>>,
}

impl Syncers {
    /// `count` threads, which stop when this is dropped.
    fn start(count: usize) -> std::io::Result<Syncers> {
        let (done, synced) = mpsc::channel();
        let parts = (0..count)
            .map(|_| {
                let (part, parts) = mpsc::channel::<Vec<Staged>>();
                let done = done.clone();
                std::thread::Builder::new()
                    .name("outbox-sync".into())
                    .spawn(move || {
                        for part in parts {
                            if done.send(sync_part(part)).is_err() {
                                break;
                            }
                        }
                    })
                    .map(|_| part)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Syncers { parts, synced })
    }

    /// `sync_all` of every file, on up to one thread per
    /// [`FILES_PER_SYNC_THREAD`] files (this one included); in no
    /// particular order.
    fn sync(&self, mut files: Vec<Staged>) -> Vec<Synced> {
        let threads = (files.len() / FILES_PER_SYNC_THREAD).clamp(1, self.parts.len() + 1);
        let per_thread = files.len().div_ceil(threads);
        let mut sent = 0;
        for part in &self.parts {
            if files.len() <= per_thread {
                break;
            }
            let rest = files.split_off(per_thread);
            match part.send(std::mem::replace(&mut files, rest)) {
                Ok(()) => sent += 1,
                // Its thread is gone: keep the part here.
                Err(mpsc::SendError(back)) => files.extend(back),
            }
        }
        let mut synced = sync_part(files);
        for _ in 0..sent {
            // A thread answers every part it is given (a sync returns its
            // error, it does not panic); a part that never comes back
            // leaves its writes failed.
            if let Ok(part) = self.synced.recv() {
                synced.extend(part);
            }
        }
        synced
    }
}

fn sync_part(part: Vec<Staged>) -> Vec<Synced> {
    part.into_iter()
        .map(|(i, file)| {
            let synced = file.as_file().sync_all();
            (i, file, synced)
        })
        .collect()
}

/// Asks the kernel to start writing `file` out now, so the syncs of a batch
/// find their data on its way and share one journal commit. Only a hint:
/// the sync that follows is what makes the file durable.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the descriptor is open for the duration of the call; the
    // call reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

/// At most this many characters of a report id go into a file name.
const MAX_ID_IN_NAME: usize = 64;

/// An outbox file's name: `{report id}-{hash}.{extension}`, the report id
/// cut to 64 characters with anything but ASCII letters, digits, `-` and
/// `_` made `_`, so that it is safe on any file system and a listing shows
/// which report each file is about; `hash` (hex) makes it unique and
/// stable, so that a redelivery rewrites the same file.
pub fn file_name(report_id: &str, hash: &str, extension: &str) -> String {
    let id: String = report_id
        .chars()
        .take(MAX_ID_IN_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}-{hash}.{extension}")
}

/// The same error for another caller (`io::Error` is not `Clone`).
fn copy(err: &std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), err.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const OPTIONS: Options = Options {
        temp_prefix: ".test-",
        temp_suffix: ".tmp",
        create_dir: true,
    };

    fn syncers() -> Syncers {
        Syncers::start(SYNC_THREADS - 1).unwrap()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn write(name: &str, contents: &str) -> (Write, oneshot::Receiver<std::io::Result<()>>) {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            name: name.into(),
            contents: contents.as_bytes().to_vec(),
            reply,
        };
        (write, answer)
    }

    #[tokio::test]
    async fn concurrent_writes_each_get_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let writer = Arc::new(GroupWriter::start(outbox.clone(), OPTIONS).unwrap());
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let writer = Arc::clone(&writer);
                tokio::spawn(async move {
                    writer
                        .write(format!("{i:03}.msg"), format!("message {i}\n").into_bytes())
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let names = names_in(&outbox);
        assert_eq!(names.len(), 200, "no temporary file is left: {names:?}");
        for i in 0..200 {
            let text = std::fs::read_to_string(outbox.join(format!("{i:03}.msg"))).unwrap();
            assert_eq!(text, format!("message {i}\n"));
        }
        // Writing a name again replaces the file.
        writer
            .write("007.msg".into(), b"again\n".to_vec())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(outbox.join("007.msg")).unwrap(),
            "again\n"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn outbox_files_and_the_directories_created_for_them_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox").join("email");
        let writer = GroupWriter::start(outbox.clone(), OPTIONS).unwrap();
        writer.write("a.msg".into(), b"A".to_vec()).await.unwrap();
        assert_eq!(mode(&outbox), 0o700);
        assert_eq!(mode(&dir.path().join("outbox")), 0o700);
        assert_eq!(mode(&outbox.join("a.msg")), 0o600);
    }

    #[test]
    fn a_failed_write_fails_alone_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way of one target: its rename fails.
        std::fs::create_dir(dir.path().join("b.msg")).unwrap();
        std::fs::write(dir.path().join("b.msg").join("keep"), "x").unwrap();
        let batch: Vec<_> = [("a.msg", "A"), ("b.msg", "B"), ("c.msg", "C")]
            .into_iter()
            .map(|(name, contents)| write(name, contents).0)
            .collect();
        let results = commit(dir.path(), OPTIONS, &syncers(), &batch);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(results[1].is_err(), "{:?}", results[1]);
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert_eq!(names_in(dir.path()), ["a.msg", "b.msg", "c.msg"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.msg")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c.msg")).unwrap(),
            "C"
        );
    }

    #[test]
    fn a_large_batch_is_synced_on_threads_and_answered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // One failure in the middle of a batch that takes the threaded path.
        std::fs::create_dir(dir.path().join("17.msg")).unwrap();
        std::fs::write(dir.path().join("17.msg").join("keep"), "x").unwrap();
        let count = SYNC_THREADS * FILES_PER_SYNC_THREAD + 3;
        let batch: Vec<_> = (0..count)
            .map(|i| write(&format!("{i:02}.msg"), &format!("message {i}")).0)
            .collect();
        let results = commit(dir.path(), OPTIONS, &syncers(), &batch);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), i != 17, "{i}: {result:?}");
        }
        for i in (0..count).filter(|i| *i != 17) {
            let text = std::fs::read_to_string(dir.path().join(format!("{i:02}.msg"))).unwrap();
            assert_eq!(text, format!("message {i}"));
        }
        assert_eq!(
            names_in(dir.path()).len(),
            count,
            "no temporary file is left"
        );
    }

    #[test]
    fn a_name_written_twice_in_a_batch_ends_with_the_later_contents() {
        let dir = tempfile::tempdir().unwrap();
        // Large enough for every thread; the two writes of "04.msg" land
        // in the parts of two different sync threads.
        let count = SYNC_THREADS * FILES_PER_SYNC_THREAD;
        let batch: Vec<_> = (0..count)
            .map(|i| {
                let name = if i == count - 1 {
                    FILES_PER_SYNC_THREAD
                } else {
                    i
                };
                write(&format!("{name:02}.msg"), &format!("message {i}")).0
            })
            .collect();
        let results = commit(dir.path(), OPTIONS, &syncers(), &batch);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("04.msg")).unwrap(),
            format!("message {}", count - 1)
        );
        assert_eq!(names_in(dir.path()).len(), count - 1);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_every_caller_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // The outbox cannot be created: a file is where its parent should be.
        std::fs::write(dir.path().join("not-a-dir"), "x").unwrap();
        let outbox = dir.path().join("not-a-dir").join("outbox");
        let batch: Vec<_> = ["a.msg", "b.msg"].map(|name| write(name, "x")).into();
        let (writes, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // Through the writer thread, as one batch: queued before it starts.
        let (queue, queued) = mpsc::channel();
        for write in writes {
            queue.send(write).unwrap();
        }
        drop(queue);
        std::thread::spawn(move || run(&outbox, OPTIONS, &syncers(), &queued));
        for answer in answers {
            assert!(answer.await.unwrap().is_err());
        }
        assert_eq!(names_in(dir.path()), ["not-a-dir"]);
    }
}
