//! prescient as a process (the built binary), for tests that kill it for real: SIGKILL,
//! SIGSTOP/SIGCONT, SIGTERM. Each instance has its own ports and a config file; its output goes
//! to a log file beside the config (printed when a test fails to find it ready).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Raw, DEADLINE};

pub struct Instance {
    pub port: u16,
    pub admin: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// Writes `toml` as the instance's config in `dir` and starts it; returns once it answers
    /// PING with PONG (its upstream is up).
    pub async fn start(dir: &Path, name: &str, toml: &str) -> Instance {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let mut i = Instance {
            port: free_port(),
            admin: free_port(),
            log: dir.join(format!("{name}.log")),
            config,
            child: None,
        };
        i.spawn().await;
        i
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_prescient"))
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", self.admin)])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prescient");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Polls PING until PONG.
    pub async fn wait_ready(&mut self) {
        let end = Instant::now() + DEADLINE * 3;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("prescient exited ({status}): {}", self.log_text());
                }
            }
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
            )
            .await
            {
                drop(s);
                let mut c = Raw::connect(self.port).await;
                c.send(&[b"PING"]).await;
                if let Ok(Some(r)) =
                    tokio::time::timeout(Duration::from_millis(500), c.try_read()).await
                {
                    if &r[..] == b"+PONG\r\n" {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("prescient not ready on {}: {}", self.port, self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, same ports and config (after `kill` or `terminate`).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGTERM; waits for it to exit (graceful shutdown). Whether it exited successfully.
    pub async fn terminate(&mut self) -> bool {
        self.signal("-TERM");
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let end = Instant::now() + DEADLINE * 3;
        while Instant::now() < end {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub async fn client(&self) -> Raw {
        Raw::connect(self.port).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}
