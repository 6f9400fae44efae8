//! Expensive test environments (a control plane, a registry, a running webhook) shared by every
//! test of one test binary, across processes.
//!
//! cargo-nextest runs each test in a process of its own, so a `static` cannot share anything: the
//! first test of a binary starts the environment under a file lock and writes what the others
//! need (ports, paths) into a state file; later tests of the same binary read it. Everything
//! started is detached from the test process and recorded in a pid list, and a small watchdog
//! (a shell loop) kills those pids and removes the directory once the test runner has exited,
//! or once no test process of the binary has been alive for [`IDLE_TEARDOWN`]. A test that
//! panics or is killed cannot leave processes behind, because nothing depends on it exiting
//! cleanly.
//!
//! Under plain `cargo test`, the runner is cargo and all tests of a binary share one process;
//! the same rules hold.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Serialize, de::DeserializeOwned};

/// Kept here for the tests that import it from its first home.
pub use crate::wait::eventually;

/// How long an environment outlives the last test process that used it. Tests of one binary
/// run back to back, so a gap this long means its tests are done.
pub const IDLE_TEARDOWN: Duration = Duration::from_secs(30);

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const PIDS_FILE: &str = "pids";
const USERS_FILE: &str = "users";
const DIRS_FILE: &str = "dirs";
const WATCHDOG_FILE: &str = "watchdog.pid";

// $1 runner pid, $2 directory, $3 idle seconds. Holds the lock while tearing down, so a test
// that is attaching either sees the whole environment or none of it.
const WATCHDOG: &str = r#"
runner="$1"; dir="$2"; idle_limit="$3"; idle=0
alive_users() {
  [ -f "$dir/users" ] || return 1
  while read -r user; do
    [ -n "$user" ] && kill -0 "$user" 2>/dev/null && return 0
  done < "$dir/users"
  return 1
}
while kill -0 "$runner" 2>/dev/null; do
  sleep 1
  if alive_users; then idle=0; else idle=$((idle + 1)); fi
  if [ "$idle" -ge "$idle_limit" ]; then
    exec 9>>"$dir/lock"
    flock 9
    if alive_users; then idle=0; flock -u 9; exec 9>&-; continue; fi
    lock_held=1
    break
  fi
done
if [ -z "${lock_held:-}" ]; then exec 9>>"$dir/lock"; flock 9; fi
rm -f "$dir/state.json"
pids=$(cat "$dir/pids" 2>/dev/null)
for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
for _ in 1 2 3 4 5 6 7 8 9 10; do
  left=""
  for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
  [ -z "$left" ] && break
  sleep 0.5
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
if [ -f "$dir/dirs" ]; then
  while read -r adopted; do [ -n "$adopted" ] && rm -rf -- "$adopted"; done < "$dir/dirs"
fi
rm -rf "$dir"
"#;

/// What a starting environment uses to launch its processes and keep its files.
pub struct Keeper {
    dir: PathBuf,
}

impl Keeper {
    /// A directory that lives exactly as long as the environment.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `command` detached from the test process (a process group of its own, stdin
    /// closed) and records its pid, so that the watchdog ends it with the environment. The
    /// caller may watch the child while it starts; dropping it neither kills nor waits.
    pub fn spawn(&self, command: &mut Command) -> Result<std::process::Child> {
        use std::os::unix::process::CommandExt as _;
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        append_line(&self.dir.join(PIDS_FILE), &child.id().to_string())?;
        Ok(child)
    }

    /// Ends `pid` with the environment (a process started some other way).
    pub fn adopt_pid(&self, pid: u32) -> Result<()> {
        append_line(&self.dir.join(PIDS_FILE), &pid.to_string())
    }

    /// Removes `dir` with the environment (a directory made outside [`Keeper::dir`]).
    pub fn adopt_dir(&self, dir: &Path) -> Result<()> {
        append_line(&self.dir.join(DIRS_FILE), &dir.display().to_string())
    }

    /// A log file in the environment's directory, for a process's stdout and stderr.
    pub fn log(&self, name: &str) -> Result<(Stdio, Stdio, PathBuf)> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((Stdio::from(file.try_clone()?), Stdio::from(file), path))
    }
}

/// Returns the state of environment `name` for this test binary, starting it with `start` if no
/// test of the binary has yet.
///
/// `start` must leave nothing running that it did not start through the [`Keeper`]. If it fails,
/// whatever it started is ended by the watchdog and the next caller tries again.
pub async fn environment<T, F, Fut>(name: &str, start: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(Keeper) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let dir = environment_dir(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = lock(&dir).await?;

    let state_path = dir.join(STATE_FILE);
    let watched = watchdog_alive(&dir);
    append_line(&dir.join(USERS_FILE), &std::process::id().to_string())?;
    if state_path.exists() && watched {
        let state =
            std::fs::read(&state_path).with_context(|| format!("reading {}", state_path.display()))?;
        drop(lock);
        return serde_json::from_slice(&state).with_context(|| format!("parsing {}", state_path.display()));
    }
    if !watched {
        // Files without a watchdog are left from a runner that was killed outright: start over.
        // With one alive, an earlier start failed; what it started stays listed for teardown.
        let _ = std::fs::remove_file(&state_path);
        let _ = std::fs::remove_file(dir.join(PIDS_FILE));
        let _ = std::fs::remove_file(dir.join(DIRS_FILE));
        start_watchdog(&dir)?;
    }

    let state = start(Keeper { dir: dir.clone() }).await?;
    let json = serde_json::to_vec_pretty(&state)?;
    let partial = dir.join("state.json.partial");
    std::fs::write(&partial, json)?;
    std::fs::rename(&partial, &state_path)?;
    drop(lock);
    Ok(state)
}

fn environment_dir(name: &str) -> PathBuf {
    let runner = std::os::unix::process::parent_id();
    let binary = std::env::var("NEXTEST_BINARY_ID").ok().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".to_owned())
    });
    let binary: String =
        binary.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    std::env::temp_dir().join("pullguard-shared").join(format!("{runner}-{binary}-{name}"))
}

// The lock is taken on a blocking thread: another test may hold it for the seconds a control
// plane takes to start, and the caller's runtime may be single-threaded.
async fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    tokio::task::spawn_blocking(move || -> Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await?
}

fn start_watchdog(dir: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let runner = std::os::unix::process::parent_id();
    let child = Command::new("bash")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("pullguard-test-watchdog")
        .arg(runner.to_string())
        .arg(dir)
        .arg(IDLE_TEARDOWN.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the environment watchdog (bash)")?;
    std::fs::write(dir.join(WATCHDOG_FILE), child.id().to_string())?;
    Ok(())
}

fn watchdog_alive(dir: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(dir.join(WATCHDOG_FILE)) else {
        return false;
    };
    let pid = pid.trim();
    // A live process has its /proc entry; a reused pid would have to be bash running our loop.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("pullguard-test-watchdog"))
        .unwrap_or(false)
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
