//! Helpers for tests that run the real `lookback` binary.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses some
pub use lookback_jepsen::events::{build, event_id, expected_json, random_event};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub data_dir: PathBuf,
    pub ingest_addr: String,
    pub http_addr: String,
}

pub fn lookback_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lookback")
}

impl Server {
    /// Starts `lookback serve` and waits until its ingest port accepts connections.
    pub fn start(data_dir: &Path, ingest_addr: &str, http_addr: &str, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, ingest_addr, http_addr, extra, &[])
    }

    /// Like [`Server::start`] with extra environment variables (e.g. `LOOKBACK_FAULTS`).
    pub fn start_with_env(data_dir: &Path, ingest_addr: &str, http_addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::fs::File::options().create(true).append(true).open(data_dir.with_extension("log")).unwrap();
        let child = serve_command(data_dir, ingest_addr, http_addr, extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lookback serve");
        let server = Server { child, data_dir: data_dir.to_path_buf(), ingest_addr: ingest_addr.into(), http_addr: http_addr.into() };
        server.wait_ready();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far (stderr goes to `<data_dir>.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.http_addr).is_err() {
            assert!(Instant::now() < deadline, "server did not start; see {}", self.data_dir.with_extension("log").display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns the exit status (use `terminate` to also assert success).
    /// The server process's resident memory (VmRSS), in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc/PID/status");
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS line");
        line.trim().trim_end_matches("kB").trim().parse().expect("VmRSS in kB")
    }

    pub fn sigterm(mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "clean shutdown must exit 0, got {status}");
    }
}

/// A panicking test must not leave a server running (it would hold the ports and the lock).
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `lookback serve` command line for a data directory and addresses, plus `extra` flags.
pub fn serve_command(data_dir: &Path, ingest_addr: &str, http_addr: &str, extra: &[&str]) -> Command {
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["serve", "--data-dir", data_dir.to_str().unwrap(), "--ingest-addr", ingest_addr];
    args.extend(["--http-addr", http_addr]);
    if !extra.contains(&"--pg-addr") {
        args.extend(["--pg-addr", &pg_addr]);
    }
    // Tests run many servers at once: none pre-faults its heap unless a test asks.
    if !extra.contains(&"--memory-prefault-mib") {
        args.extend(["--memory-prefault-mib", "0"]);
    }
    args.extend(extra);
    let mut command = Command::new(lookback_bin());
    command.args(&args).env("LOOKBACK_LOG", "info").env_remove("LOOKBACK_FAULTS");
    command
}

/// Runs a `lookback serve` that is expected to refuse to start; returns its exit status and
/// stderr. Panics if it is still running after `timeout`.
pub fn serve_expecting_failure(mut command: Command, timeout: Duration) -> (std::process::ExitStatus, String) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn lookback serve");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status, stderr);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("lookback serve should have refused to start but ran for {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory with a `data` directory and two free local addresses.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub ingest_addr: String,
    pub http_addr: String,
}

impl Default for Site {
    fn default() -> Site {
        Site::new()
    }
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let ingest_addr = format!("127.0.0.1:{}", free_port());
        let http_addr = format!("127.0.0.1:{}", free_port());
        Site { dir, data_dir, ingest_addr, http_addr }
    }

    pub fn start(&self, extra: &[&str]) -> Server {
        Server::start(&self.data_dir, &self.ingest_addr, &self.http_addr, extra)
    }

    /// Writes `text` as a config file in the site directory and returns its path.
    pub fn config(&self, text: &str) -> String {
        let path = self.dir.path().join("lookback.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// Seconds of CPU (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// The value of an unlabelled Prometheus sample, if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Event ids of dumped rows, with how often each appears.
pub fn dumped_ids(rows: &[serde_json::Map<String, serde_json::Value>]) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for row in rows {
        *seen.entry(row["event_id"].as_str().expect("event_id is a string").to_string()).or_default() += 1;
    }
    seen
}

/// Runs `lookback dump` and returns the JSON objects.
pub fn dump(data_dir: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let out = Command::new(lookback_bin())
        .args(["dump", "--data-dir", data_dir.to_str().unwrap()])
        .env("LOOKBACK_LOG", "warn")
        .output()
        .expect("run lookback dump");
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().as_object().unwrap().clone())
        .collect()
}

pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Runs `psql` against a Lookback pg endpoint (`127.0.0.1:PORT`) with `args` after the
/// connection options; returns (success, stdout, stderr). Unaligned, tuples-only output.
/// psql against `pg_addr` as user and database `lookback`: unaligned, tuples only, stopping at
/// the first error, then `args`.
fn psql_command(pg_addr: &str, args: &[&str]) -> Command {
    let (host, port) = pg_addr.rsplit_once(':').expect("host:port");
    let mut command = Command::new("psql");
    command
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", "lookback", "-d", "lookback"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10");
    command
}

/// [`psql`] with `stdin` on its standard input (for COPY FROM STDIN).
pub fn psql_stdin(pg_addr: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = psql_command(pg_addr, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write psql's stdin");
    let output = child.wait_with_output().expect("wait for psql");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

pub fn psql(pg_addr: &str, args: &[&str]) -> (bool, String, String) {
    let output = psql_command(pg_addr, args).output().expect("run psql (Debian package postgresql-client; .ci/run installs it)");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}
