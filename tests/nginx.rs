//! Carried connections against nginx, a server that is not ours, judged by nginx's own
//! counts: its access log's connection serial number (`$connection`) for the
//! connections that served requests, and `stub_status` for those it holds open.
//!
//! Skips (with a message) when nginx is not installed, unless `CI` is set: then it
//! fails, since `.ci/servers` installs it.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{HANG_GUARD, generation, get_text as get, settle};
use rtlocal::HttpClientManager;

struct Nginx {
    port: u16,
    dir: PathBuf,
    child: Child,
    #[cfg(feature = "rustls")]
    cert_pem: Option<String>,
}

fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

impl Nginx {
    /// nginx on a free port of 127.0.0.1, answering "hello", closing idle keep-alive
    /// connections after `keepalive`; with TLS (a certificate for `localhost`) when
    /// `tls`. `None` (after saying so) when nginx is not installed and `CI` is not set.
    fn start(keepalive: &str, tls: bool) -> Option<Nginx> {
        let Some(bin) = nginx_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("nginx is not installed and CI is set: run .ci/servers (as root)");
            }
            eprintln!(
                "SKIPPED: nginx is not installed (apt-get install nginx, or run .ci/servers \
                 as root)"
            );
            return None;
        };
        static N: AtomicUsize = AtomicUsize::new(0);
        // A port freed just before nginx binds it can be taken meanwhile: retry.
        for attempt in 0..5 {
            let dir = std::env::temp_dir().join(format!(
                "rtlocal-nginx-{}-{}-{attempt}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut listen = format!("listen 127.0.0.1:{port};");
            let mut cert_pem = None;
            if tls {
                let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                    .expect("certificate");
                std::fs::write(dir.join("cert.pem"), key.cert.pem()).expect("cert.pem");
                std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem())
                    .expect("key.pem");
                listen = format!(
                    "listen 127.0.0.1:{port} ssl; ssl_certificate {0}/cert.pem; \
                     ssl_certificate_key {0}/key.pem; ssl_protocols TLSv1.2 TLSv1.3;",
                    dir.display()
                );
                cert_pem = Some(key.cert.pem());
            }
            #[cfg(not(feature = "rustls"))]
            let _ = cert_pem;
            let conf = format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 128; }}\n\
                 http {{\n  log_format conn '$connection $request';\n  \
                 access_log {d}/access.log conn;\n  keepalive_timeout {keepalive};\n  \
                 server {{\n    {listen}\n    \
                 location = /status {{ stub_status; access_log off; }}\n    \
                 location / {{ return 200 \"hello\"; }}\n  }}\n}}\n",
                d = dir.display()
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .arg("-g")
                .arg("daemon off;")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut nginx = Nginx {
                port,
                dir,
                child,
                #[cfg(feature = "rustls")]
                cert_pem,
            };
            if nginx.wait_ready() {
                return Some(nginx);
            }
            eprintln!(
                "nginx did not start on port {port} (attempt {attempt}):\n{}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
        }
        panic!("nginx did not start after 5 attempts");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + HANG_GUARD;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn url(&self, tls: bool) -> String {
        if tls {
            format!("https://localhost:{}/", self.port)
        } else {
            format!("http://127.0.0.1:{}/", self.port)
        }
    }

    fn builder(&self) -> rtlocal::Builder {
        let b = HttpClientManager::builder();
        #[cfg(feature = "rustls")]
        if let Some(pem) = &self.cert_pem {
            return b
                .tls_built_in_roots(false)
                .add_root_certificate_pem(pem.as_bytes());
        }
        b
    }

    /// The connections that served requests, by nginx's serial numbers.
    fn connections_used(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut serials: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
        serials.sort_unstable();
        serials.dedup();
        serials.len()
    }

    /// Client connections nginx holds open, not counting the one asking (plain
    /// `stub_status`, so only for a plain nginx).
    fn open(&self) -> usize {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
        s.write_all(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let active: usize = out
            .split("Active connections:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no stub_status in {out:?}"));
        active - 1
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker too (a SIGKILL would leave it running).
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a plain signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Five runtime generations, one connection by nginx's count; `shutdown` then closes
/// the parked connection and nginx holds none.
#[test]
fn nginx_serves_every_generation_on_one_carried_connection() {
    let Some(nginx) = Nginx::start("60s", false) else {
        return;
    };
    let m = nginx.builder().build().unwrap();
    for _ in 0..5 {
        assert_eq!(generation(get(&m, &nginx.url(false))).unwrap(), "hello");
    }
    assert_eq!(
        nginx.connections_used(),
        1,
        "a generation opened its own connection"
    );
    assert_eq!(nginx.open(), 1, "the parked connection");
    let report = generation(m.shutdown(HANG_GUARD));
    assert_eq!(report.parked_closed, 1, "{report}");
    assert_eq!(
        settle(0, || nginx.open()),
        0,
        "nginx still holds a connection"
    );
}

/// nginx closes the parked connection at its keep-alive timeout: the next generation's
/// request goes out on a new connection, without an error.
#[test]
fn nginx_closing_a_parked_connection_costs_no_error() {
    let Some(nginx) = Nginx::start("200ms", false) else {
        return;
    };
    let m = nginx.builder().build().unwrap();
    assert_eq!(generation(get(&m, &nginx.url(false))).unwrap(), "hello");
    assert_eq!(
        settle(0, || nginx.open()),
        0,
        "nginx kept the connection open"
    );
    assert_eq!(generation(get(&m, &nginx.url(false))).unwrap(), "hello");
    assert_eq!(nginx.connections_used(), 2);
}

/// The same over TLS: one TLS connection (one handshake) for every generation.
#[cfg(feature = "rustls")]
#[test]
fn nginx_serves_every_generation_on_one_carried_tls_connection() {
    let Some(nginx) = Nginx::start("60s", true) else {
        return;
    };
    let m = nginx.builder().build().unwrap();
    for _ in 0..5 {
        assert_eq!(generation(get(&m, &nginx.url(true))).unwrap(), "hello");
    }
    assert_eq!(
        nginx.connections_used(),
        1,
        "a generation opened its own connection"
    );
    assert_eq!(m.stats().connections_opened, 1);
    assert_eq!(m.stats().connections_carried, 4);
}
