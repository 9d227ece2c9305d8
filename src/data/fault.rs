//! Fault injection for the reliability tests. `PIPELINE_DISK_LIMIT=BYTES` makes cache writes
//! fail with ENOSPC ("No space left on device") once the process has written that many bytes
//! into the cache, as a full disk would. `PIPELINE_KILL_AT=N` makes the process kill
//! itself with SIGKILL (no destructors, no flushing, exactly like `kill -9`) when it reaches
//! its N-th kill point; `PIPELINE_KILL_TRACE=1` prints every kill point it passes to stderr,
//! so a test can list them. Kill points sit wherever a crash could leave the cache half
//! done: at each stage's start, after every record batch and mid-file, between moving an
//! artifact into place and writing its record, and between a record and the pipeline's
//! pointer. Without the variables a kill point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Config {
    kill_at: Option<u64>,
    trace: bool,
    disk_limit: Option<u64>,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        kill_at: std::env::var("PIPELINE_KILL_AT").ok().and_then(|v| v.parse().ok()),
        trace: std::env::var_os("PIPELINE_KILL_TRACE").is_some(),
        disk_limit: std::env::var("PIPELINE_DISK_LIMIT").ok().and_then(|v| v.parse().ok()),
    })
}

static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Accounts for `bytes` about to be written into the cache: ENOSPC past `PIPELINE_DISK_LIMIT`.
pub fn charge(bytes: usize) -> std::io::Result<()> {
    let Some(limit) = config().disk_limit else {
        return Ok(());
    };
    let total = WRITTEN.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
    if total > limit {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

static PASSED: AtomicU64 = AtomicU64::new(0);

/// A place where a crash must not corrupt the cache; `what` names it for the trace.
pub fn point(what: impl FnOnce() -> String) {
    let c = config();
    if c.kill_at.is_none() && !c.trace {
        return;
    }
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if c.trace {
        eprintln!("kill point {n}: {}", what());
    }
    if c.kill_at == Some(n) {
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
