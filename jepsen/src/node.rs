//! One `lookback serve` process under test: started, killed, paused and restarted on the same
//! data directory and ports, with its recovery time measured and its log kept.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::events::JsonRow;

/// Longest wait for a restarted server to accept connections.
pub const START_TIMEOUT_MS: u64 = 120_000;

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Node {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub ingest_addr: String,
    pub pg_addr: String,
    pub http_addr: String,
    child: Option<Child>,
}

impl Node {
    /// A node in `site` (created): `site/data`, `site/lookback.toml` (`config_toml`),
    /// `site/server.log`, and three free local ports kept across restarts.
    pub fn new(bin: &Path, site: &Path, config_toml: &str) -> Result<Node> {
        let data_dir = site.join("data");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        let config = site.join("lookback.toml");
        std::fs::write(&config, config_toml)?;
        let addr = |port: u16| format!("127.0.0.1:{port}");
        Ok(Node {
            bin: bin.to_path_buf(),
            data_dir,
            config,
            log: site.join("server.log"),
            ingest_addr: addr(free_port()?),
            pg_addr: addr(free_port()?),
            http_addr: addr(free_port()?),
            child: None,
        })
    }

    fn command(&self, env: &[(&str, &str)]) -> Result<Command> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args([
                "--ingest-addr",
                &self.ingest_addr,
                "--pg-addr",
                &self.pg_addr,
                "--http-addr",
                &self.http_addr,
            ])
            .args(["--memory-prefault-mib", "0"])
            .env("LOOKBACK_LOG", "info")
            // Start-up errors as one message, not a backtrace (panics still print theirs).
            .env("RUST_LIB_BACKTRACE", "0")
            .env_remove("LOOKBACK_FAULTS")
            .env_remove("LOOKBACK_POWERLOSS_DIR")
            .env_remove("LOOKBACK_POWERLOSS_IGNORE_SYNC")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(command)
    }

    /// Starts the server and waits until its pg port (bound last) accepts connections;
    /// returns how long that took (the recovery time after a crash).
    pub fn start(&mut self, env: &[(&str, &str)]) -> Result<Duration> {
        assert!(self.child.is_none(), "start: the node is already running");
        let started = Instant::now();
        let mut child = self
            .command(env)?
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let deadline = started + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            if std::net::TcpStream::connect(&self.pg_addr).is_ok()
                && std::net::TcpStream::connect(&self.http_addr).is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lookback serve exited during start-up ({status}); log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "lookback serve did not start within {START_TIMEOUT_MS} ms; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(started.elapsed())
    }

    /// Starts a server that must refuse to start; returns its exit status and log tail.
    pub fn start_expecting_failure(
        &mut self,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(ExitStatus, String)> {
        let log_before = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut child = self.command(env)?.spawn()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read(&self.log).unwrap_or_default();
                let tail = String::from_utf8_lossy(&log[(log_before as usize).min(log.len())..])
                    .into_owned();
                return Ok((status, tail));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lookback serve should have refused to start but ran for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for a process that is expected to die by itself (an injected crash).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(None)
    }

    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, then the exit status (clean shutdown).
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_millis(START_TIMEOUT_MS))?;
        status.context("lookback serve did not exit after SIGTERM")
    }

    /// An HTTP/1.1 request to the server's operator endpoint: (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.http_addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Replaces the injected faults at run time (fault mode only); "" clears them.
    pub fn set_faults(&self, spec: &str) -> Result<()> {
        let (status, body) = if spec.is_empty() {
            self.http("DELETE", "/debug/faults", "")?
        } else {
            self.http("PUT", "/debug/faults", spec)?
        };
        if status != 200 {
            bail!("set faults {spec:?}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// `lookback dump` of the `events` table (the server must not be running: it takes the lock).
    pub fn dump(&self) -> Result<Vec<JsonRow>> {
        let out = Command::new(&self.bin)
            .args(["dump", "--data-dir"])
            .arg(&self.data_dir)
            .env("LOOKBACK_LOG", "warn")
            .output()
            .context("run lookback dump")?;
        if !out.status.success() {
            bail!(
                "lookback dump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut rows = Vec::new();
        for line in String::from_utf8(out.stdout)?.lines() {
            match serde_json::from_str::<serde_json::Value>(line)? {
                serde_json::Value::Object(row) => rows.push(row),
                other => bail!("dump printed a non-object: {other}"),
            }
        }
        Ok(rows)
    }

    /// Streams `lookback dump` through the checker (the server must not be running).
    pub fn check_dump(&self, history: &crate::history::History) -> Result<crate::history::Verdict> {
        use std::io::BufRead;
        let mut child = Command::new(&self.bin)
            .args(["dump", "--data-dir"])
            .arg(&self.data_dir)
            .env("LOOKBACK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run lookback dump")?;
        let mut checker = history.checker();
        let stdout = child.stdout.take().context("dump's stdout")?;
        for line in std::io::BufReader::new(stdout).lines() {
            match serde_json::from_str::<serde_json::Value>(&line?)? {
                serde_json::Value::Object(row) => checker.row(&row),
                other => bail!("dump printed a non-object: {other}"),
            }
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("lookback dump failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(checker.finish())
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
            self.kill9();
        }
    }
}
