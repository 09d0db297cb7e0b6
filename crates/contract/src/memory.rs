//! Giving freed heap memory back to the system.
//!
//! glibc's allocator returns freed memory to the system only from the top
//! of an arena; a free chunk below a live allocation stays resident until
//! it is reused. A burst (a backlog drained after an outage, a pause of
//! the broker) grows every process's heap, and without a trim it stays
//! grown: in a 30-minute soak a few seconds' burst took the
//! email-service's RSS from 21.5 to 32.8 MiB for good. In 600 msg/s soaks
//! on a busy machine a burst of backlog took the broker's anonymous memory
//! to 20–27 MiB; with a trim after each journal prune it came back to
//! 11.8–12.6 MiB within the minute. The broker trims after each prune of
//! its journal; the services, which have no such housekeeping, start
//! [`trim_periodically`].
/// Returns the free pages of every arena to the system (`malloc_trim`).
/// It walks the arenas' free chunks under their locks (0.1–9 ms in the
/// broker's soaks), so it is called once a minute, off the request path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim has no preconditions; it only takes the
    // allocator's own locks.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(
        released,
        micros = started.elapsed().as_micros() as u64,
        "returned free heap pages to the system"
    );
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// How often [`trim_periodically`]'s thread trims.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts, once per process, a thread that calls [`release_free_memory`]
/// every [`TRIM_EVERY`]; whether this call started it. A later call does
/// nothing (under `labrelay up` one process runs every service).
pub fn trim_periodically() -> bool {
    static STARTED: std::sync::Once = std::sync::Once::new();
    let mut started = false;
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TRIM_EVERY);
                    release_free_memory();
                }
            });
        match spawned {
            Ok(_) => started = true,
            Err(error) => tracing::warn!(%error, "could not start the memory trim thread"),
        }
    });
    started
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn one_trim_thread_per_process_however_often_it_is_asked_for() {
        assert!(trim_periodically(), "the first call starts the thread");
        assert!(!trim_periodically(), "a second call starts none");
    }

    #[test]
    fn gives_back_memory_freed_below_live_allocations() {
        const BLOCK: usize = 1024;
        const BLOCKS: usize = 32 * 1024;
        // 32 MiB in 1 KiB blocks, then every block but one in 64 freed: the
        // holes are below live blocks, so free() keeps them resident.
        let blocks: Vec<Box<[u8]>> = (0..BLOCKS)
            .map(|_| vec![1u8; BLOCK].into_boxed_slice())
            .collect();
        let kept: Vec<Box<[u8]>> = blocks.into_iter().step_by(64).collect();
        let before = rss_anon_kib();
        release_free_memory();
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) >= 16 * 1024,
            "RssAnon {before} kB before, {after} kB after"
        );
        assert_eq!(kept.len(), BLOCKS / 64);
    }
}
