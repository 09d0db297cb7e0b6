//! What the bench reads about processes from `/proc`: resident memory, CPU
//! time, the load average, and which process listens on a port. Linux
//! only; elsewhere every reading is `None` ("not measured": `-` in the
//! tables, `null` in `--json`), and the rest of the bench runs as on Linux.

use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(not(target_os = "linux"))]
pub use elsewhere::{cpu_seconds, load_average, pid_listening_on, status_mib};

/// Whether this system's processes can be measured at all.
pub const MEASURED: bool = cfg!(target_os = "linux");

/// Linux reports `utime`/`stime` in USER_HZ ticks, which is 100 on every
/// architecture the kernel's ABI fixes it for (x86, arm, riscv).
#[cfg(target_os = "linux")]
const TICKS_PER_SECOND: f64 = 100.0;

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
#[cfg(target_os = "linux")]
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// User + system CPU time the process has used so far, in seconds.
#[cfg(target_os = "linux")]
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The 1, 5 and 15 minute load averages.
#[cfg(target_os = "linux")]
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    Some([(); 3].map(|()| values.next().unwrap_or(0.0)))
}

/// The process of this user that listens on TCP `port` on this machine,
/// found through the socket's inode in `/proc/net/tcp{,6}` and `/proc/*/fd`.
#[cfg(target_os = "linux")]
pub fn pid_listening_on(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let matches = u16::from_str_radix(local_port, 16).ok()? == port
                        && *fields.get(3)? == LISTEN;
                    matches.then(|| fields.get(9).map(|i| i.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .next()?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
mod elsewhere {
    pub fn status_mib(_pid: u32, _field: &str) -> Option<f64> {
        None
    }

    pub fn cpu_seconds(_pid: u32) -> Option<f64> {
        None
    }

    pub fn load_average() -> Option<[f64; 3]> {
        None
    }

    pub fn pid_listening_on(_port: u16) -> Option<u32> {
        None
    }
}

/// `1.00 0.50 0.25`, or "not measured".
pub fn fmt_load(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "not measured".into(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

/// A process the bench watches.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// What one process used over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub name: String,
    pub pid: u32,
    /// `VmHWM` at the end: the most resident memory it ever had.
    pub peak_rss_mib: Option<f64>,
    /// `VmRSS` when the load started and when it ended.
    pub rss_start_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    /// The largest `VmRSS` sampled (once a second) during the run.
    pub rss_max_sampled_mib: Option<f64>,
    /// CPU time (user + system) used while the load ran.
    pub cpu_seconds: Option<f64>,
    pub cpu_ms_per_report: Option<f64>,
}

/// One sample a second: resident memory of every watched process.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub rss_mib: Vec<Option<f64>>,
}

/// Samples the watched processes once a second from `start` until dropped.
pub struct Sampler {
    processes: Vec<Watched>,
    cpu_start: Vec<Option<f64>>,
    rss_start: Vec<Option<f64>>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(processes: Vec<Watched>) -> Sampler {
        let cpu_start = processes.iter().map(|p| cpu_seconds(p.pid)).collect();
        let rss_start = processes
            .iter()
            .map(|p| status_mib(p.pid, "VmRSS"))
            .collect();
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (pids, sink) = (
            processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            samples.clone(),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let sample = Sample {
                    t_secs: started.elapsed().as_secs_f64(),
                    rss_mib: pids.iter().map(|&p| status_mib(p, "VmRSS")).collect(),
                };
                sink.lock().expect("sampler lock").push(sample);
            }
        });
        Sampler {
            processes,
            cpu_start,
            rss_start,
            samples,
            task,
        }
    }

    /// Stops sampling; what each process used since `start`, with CPU per
    /// report over `reports`.
    pub fn finish(self, reports: usize) -> (Vec<Usage>, Vec<Sample>) {
        self.task.abort();
        let samples = std::mem::take(&mut *self.samples.lock().expect("sampler lock"));
        let usage = self
            .processes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let cpu = cpu_seconds(p.pid)
                    .zip(self.cpu_start[i])
                    .map(|(end, start)| end - start);
                let max_sampled = samples
                    .iter()
                    .filter_map(|s| s.rss_mib[i])
                    .fold(None, |max: Option<f64>, v| {
                        Some(max.map_or(v, |m| m.max(v)))
                    });
                Usage {
                    name: p.name.clone(),
                    pid: p.pid,
                    peak_rss_mib: status_mib(p.pid, "VmHWM"),
                    rss_start_mib: self.rss_start[i],
                    rss_end_mib: status_mib(p.pid, "VmRSS"),
                    rss_max_sampled_mib: max_sampled,
                    cpu_seconds: cpu,
                    cpu_ms_per_report: cpu
                        .filter(|_| reports > 0)
                        .map(|c| c * 1000.0 / reports as f64),
                }
            })
            .collect();
        (usage, samples)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(status_mib(me, "VmRSS").is_some_and(|m| m > 0.0));
        assert!(status_mib(me, "VmHWM").is_some_and(|m| m > 0.0));
        assert!(cpu_seconds(me).is_some());
        assert!(status_mib(me, "Vm").is_none());
    }

    #[test]
    fn finds_the_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }
}
