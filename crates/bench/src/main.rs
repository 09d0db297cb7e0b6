//! `labrelay-bench`: parses its arguments and runs the bench (see the
//! library's documentation for what it measures and how).

/// The allocator and settings of the `labrelay` binary (its `main.rs`
/// says why), so that the load generator's own CPU and memory, which
/// share the machine with the system under test, stay comparable with
/// runs from before the bench had a binary of its own.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(not(target_env = "msvc"))]
#[used]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&std::ffi::c_char> = Some(
    // SAFETY: jemalloc reads this as a `const char *`, a NUL-terminated
    // string it never writes; the literal lives for the whole program.
    unsafe { &*c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000".as_ptr() },
);

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = labrelay_bench::BenchArgs::parse();
    labrelay_runtime::telemetry::init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(labrelay_bench::run(args))
}
