//! Configuration: the embedded `config/default.toml`, then an optional file, then
//! `SLUICE__SECTION__KEY` environment variables. Relative paths are made absolute here, once,
//! so nothing later depends on the working directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any working directory.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// This process's name among several instances on one PostgreSQL metadata database. Empty
    /// (the default): a new one is made at every start (see [`Settings::instance_id`]).
    #[serde(default)]
    pub instance_id: String,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub files: FileSettings,
    pub auth: AuthSettings,
    pub engine: EngineSettings,
    pub limits: LimitSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub client_request_timeout_s: u64,
    pub shutdown_timeout_s: u64,
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Empty means SQLite in `data_dir`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileSettings {
    pub allowed_roots: Vec<PathBuf>,
}

#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub tokens: Vec<String>,
    pub allow_anonymous: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them, not even in a debug dump of the settings.
        f.debug_struct("AuthSettings")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineSettings {
    pub max_running_flows: usize,
    pub max_parallel_tasks: u32,
    pub memory_limit_mb: u64,
    pub persist_interval_ms: u64,
    pub max_log_lines: usize,
    pub max_restarts: u32,
    pub threads: usize,
    pub batch_size: usize,
    /// Hours a FAILED or CANCELLED flow keeps its checkpoints for a retry (they go sooner when
    /// a later flow of the same input completes); 0 keeps nothing.
    pub retry_retention_h: u64,
    /// With PostgreSQL metadata: seconds a flow's lease lasts unless its instance renews it
    /// (every third of it); another instance resumes the flows of one that stopped renewing.
    #[serde(default = "default_lease_timeout_s")]
    pub lease_timeout_s: u64,
}

fn default_lease_timeout_s() -> u64 {
    15
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub max_sources: usize,
    pub max_transforms: usize,
    pub max_sql_length: usize,
    /// The most checks a flow input may carry.
    #[serde(default = "default_max_checks")]
    pub max_checks: usize,
}

fn default_max_checks() -> usize {
    500
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// Loads the layered configuration: defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
        Self::load_with(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests use it).
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, config::ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("SLUICE__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("SLUICE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("auth.tokens")
                .with_list_parse_key("files.allowed_roots")
                .try_parsing(true)
                .source(Some(env)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.absolutize()?;
        settings.check()?;
        Ok(settings)
    }

    /// Makes `data_dir` and the allowed roots absolute against the current directory.
    fn absolutize(&mut self) -> Result<(), config::ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| config::ConfigError::Message(format!("current directory: {e}")))?;
        if self.data_dir.is_relative() {
            self.data_dir = cwd.join(&self.data_dir);
        }
        for root in &mut self.files.allowed_roots {
            if root.is_relative() {
                *root = cwd.join(&*root);
            }
        }
        self.auth.tokens.retain(|t| !t.trim().is_empty());
        Ok(())
    }

    fn check(&self) -> Result<(), config::ConfigError> {
        let bad = |msg: &str| Err(config::ConfigError::Message(msg.to_string()));
        if self.engine.max_running_flows == 0 {
            return bad("engine.max_running_flows must be at least 1");
        }
        if !(1..=64).contains(&self.engine.max_parallel_tasks) {
            return bad("engine.max_parallel_tasks must be between 1 and 64");
        }
        if self.engine.memory_limit_mb < 16 {
            return bad("engine.memory_limit_mb must be at least 16");
        }
        if self.engine.max_log_lines < 10 {
            return bad("engine.max_log_lines must be at least 10");
        }
        if self.engine.persist_interval_ms == 0 {
            return bad("engine.persist_interval_ms must be at least 1");
        }
        if self.engine.batch_size == 0 {
            return bad("engine.batch_size must be at least 1");
        }
        if !(1..=3600).contains(&self.engine.lease_timeout_s) {
            return bad("engine.lease_timeout_s must be between 1 and 3600");
        }
        let id = self.instance_id.trim();
        if id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad("instance_id may hold at most 64 letters, digits, '-', '_' and '.'");
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes must be at least 1024");
        }
        Ok(())
    }

    /// The metadata database URL: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.url.trim().is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("sluice.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// This process's instance id: the configured one, or one made now from the host name and
    /// random digits (never read from a file: instances share their data directory).
    pub fn instance_id(&self) -> String {
        let id = self.instance_id.trim();
        if !id.is_empty() {
            return id.to_string();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| {
                h.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(40)
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sluice".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    }

    /// Where flows keep their checkpoints while they run.
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_embedded_and_valid() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.server.host, "127.0.0.1");
        assert_eq!(s.server.port, 8080);
        assert!(s.data_dir.is_absolute());
        assert!(s.database_url().starts_with("sqlite://"));
        assert!(s.auth.tokens.is_empty());
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let s = Settings::load_with(
            None,
            env(&[
                ("SLUICE__SERVER__PORT", "9000"),
                ("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "3"),
                ("SLUICE__AUTH__TOKENS", "a,b"),
                ("SLUICE__DATA_DIR", "/tmp/sluice-x"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9000);
        assert_eq!(s.engine.max_running_flows, 3);
        assert_eq!(s.auth.tokens, vec!["a", "b"]);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/sluice-x"));
    }

    #[test]
    fn a_file_layers_over_defaults_and_env_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nport = 7000\nhost = \"0.0.0.0\"\n").unwrap();
        let s = Settings::load_with(Some(&file), env(&[("SLUICE__SERVER__PORT", "7001")])).unwrap();
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.server.port, 7001);
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        let err = Settings::load_with(None, env(&[("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "0")])).unwrap_err();
        assert!(err.to_string().contains("engine.max_running_flows"), "{err}");
    }

    #[test]
    fn an_instance_id_is_configured_or_made_at_each_start() {
        let s = Settings::load_with(None, env(&[("SLUICE__INSTANCE_ID", "node-a")])).unwrap();
        assert_eq!(s.instance_id(), "node-a");
        let s = Settings::load_with(None, env(&[])).unwrap();
        let (a, b) = (s.instance_id(), s.instance_id());
        assert_ne!(a, b, "two starts get two ids");
        assert_eq!(s.engine.lease_timeout_s, 15);
        let err = Settings::load_with(None, env(&[("SLUICE__INSTANCE_ID", "a b")])).unwrap_err();
        assert!(err.to_string().contains("instance_id"), "{err}");
        let err = Settings::load_with(None, env(&[("SLUICE__ENGINE__LEASE_TIMEOUT_S", "0")])).unwrap_err();
        assert!(err.to_string().contains("engine.lease_timeout_s"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let s = Settings::load_with(None, env(&[("SLUICE__AUTH__TOKENS", "topsecret")])).unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
