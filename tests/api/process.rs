//! The server as a child process (the real `sluice` binary), for what needs a process: kill -9,
//! SIGTERM, and reading the service log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{http_client, instance_id_for, metadata_url_for, Api};

pub struct ServerProcess {
    pub api: Api,
    pub log: PathBuf,
    child: Child,
}

impl std::ops::Deref for ServerProcess {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ServerProcess {
    /// Starts `sluice serve` on a free port with `data_dir`, `files` as the only allowed root,
    /// the given extra settings, and its log appended to `log`.
    pub async fn start(data_dir: &Path, files: &Path, log: &Path, env: &[(&str, &str)]) -> ServerProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let already = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve")
            .env("SLUICE__SERVER__PORT", "0")
            .env("SLUICE__SERVER__WORKERS", "2")
            .env("SLUICE__DATA_DIR", data_dir)
            .env("SLUICE__FILES__ALLOWED_ROOTS", files)
            .env("SLUICE__ENGINE__PERSIST_INTERVAL_MS", "50")
            .env("SLUICE__ENGINE__THREADS", "2")
            .env("RUST_LOG", "info,sluice=debug,sqlx=warn,sea_orm=warn")
            .env("SLUICE__INSTANCE_ID", instance_id_for(data_dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        // With SLUICE_TEST_METADATA_URL: metadata in PostgreSQL, the same database for every
        // start on this data directory.
        if !env.iter().any(|(k, _)| *k == "SLUICE__DATABASE__URL") {
            if let Some(url) = metadata_url_for(data_dir).await {
                cmd.env("SLUICE__DATABASE__URL", url);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sluice");
        // The address is in the one start-up line that says where it listens.
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let fresh = text.get(already as usize..).unwrap_or("");
            if let Some(at) = fresh.find("listening on http://") {
                let rest = &fresh[at + "listening on ".len()..];
                break rest.split_whitespace().next().expect("address").to_string();
            }
            assert!(Instant::now() < deadline, "server did not start; log:\n{fresh}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ServerProcess {
            api: Api {
                address,
                client: http_client(),
                data_dir: data_dir.to_path_buf(),
                files: files.to_path_buf(),
            },
            log: log.to_path_buf(),
            child,
        }
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGSTOP / SIGCONT: pauses the process (it keeps its sockets, does nothing) or resumes it.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM: a graceful shutdown request.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
