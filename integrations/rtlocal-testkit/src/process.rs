//! The external servers (PostgreSQL, redis-server): supervised by a shell that stops them
//! when our end of a pipe closes, started on a port nobody holds.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many ports a start tries before giving up.
const PORT_ATTEMPTS: usize = 10;

/// Ports tried: below Linux's ephemeral range (32768–60999), which the OS hands out to
/// port-0 listeners and outgoing connections, so only another fixed-port server can
/// hold one.
const PORTS: std::ops::Range<u16> = 15_000..32_000;

/// How long a server may take to start before it is reported as failed.
pub(crate) const START_BOUND: Duration = Duration::from_secs(60);

/// A server run by `sh -c` (directly, or as another user): the shell starts it in the
/// background and waits for it; a watcher waits for a line (or end of file) on the
/// shell's stdin — our pipe — then stops the server and removes its directory. So
/// dropping the handle, or this process ending, stops the server; and a server that
/// exits by itself (a port already taken) ends the shell, which [`exited`](Self::exited)
/// sees.
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// `prelude` runs first (`initdb`; a failure ends the shell), then `server` in the
    /// background, stopped with `signal`; `dir` is removed once it has stopped.
    pub(crate) fn spawn(
        run_as: Option<&str>,
        prelude: &str,
        server: &str,
        signal: &str,
        dir: &Path,
    ) -> Supervised {
        let d = dir.display();
        let script = format!(
            "exec 3<&0 </dev/null; {prelude} \
             {server} 3<&- & pid=$!; \
             ( read _ignored <&3; kill -{signal} $pid 2>/dev/null; \
               while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm -rf '{d}' ) & \
             wait $pid"
        );
        let mut cmd = match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh", "-c", &script]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh to start a server");
        let stdin = child.stdin.take();
        Supervised { child, stdin }
    }

    /// The shell's exit status once the server has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

/// How one attempt to start a server on a port ended.
pub(crate) enum Attempt<T> {
    Started(T),
    /// The server's log says the port is taken: try another.
    PortTaken,
}

/// The ports an external server's `start` tries: ten random ports below the OS's
/// ephemeral range (see [Ports](crate#ports)).
pub fn candidate_ports() -> impl Iterator<Item = u16> {
    (0..PORT_ATTEMPTS).map(|_| random_port())
}

/// Starts a server with `attempt` on each of `ports` in turn, until one is not taken.
///
/// # Panics
/// When every port is taken.
pub(crate) fn on_a_free_port<T>(
    what: &str,
    ports: impl IntoIterator<Item = u16>,
    mut attempt: impl FnMut(u16) -> Attempt<T>,
) -> T {
    let mut tried = Vec::new();
    for port in ports {
        match attempt(port) {
            Attempt::Started(server) => return server,
            Attempt::PortTaken => tried.push(port),
        }
    }
    panic!("{what}: every port tried was already in use: {tried:?}")
}

/// Whether a server's log says it could not listen because the port is taken.
pub(crate) fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

fn random_port() -> u16 {
    // RandomState's keys are random per instance: a random number without a dependency.
    let r = RandomState::new().hash_one(std::process::id());
    let span = u64::from(PORTS.end - PORTS.start);
    // The remainder is below `span`, a u16.
    PORTS.start + u16::try_from(r % span).expect("below the range's span")
}

/// A directory of our own, kept (the supervising shell removes it).
pub(crate) fn temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory")
        .keep()
}

pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `ready` until it is true, the server exits or [`START_BOUND`] passes.
pub(crate) fn wait_ready(process: &mut Supervised, mut ready: impl FnMut() -> bool) -> Readiness {
    let deadline = Instant::now() + START_BOUND;
    loop {
        if ready() {
            return Readiness::Ready;
        }
        if let Some(status) = process.exited() {
            return Readiness::Exited(status);
        }
        if Instant::now() > deadline {
            return Readiness::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) enum Readiness {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}
