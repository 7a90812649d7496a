//! The composition root: builds the metadata database (and migrates it), the secret cipher, the
//! engine, the Persister and FlowSupervisor (once each), and the HTTP server.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use migration::MigratorTrait;
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tracing_actix_web::TracingLogger;

use crate::actors::leases::Leases;
use crate::actors::messages::{Park, Recover};
use crate::actors::supervisor::SupervisorConfig;
use crate::actors::{FlowSupervisor, Persister, PlanLoader};
use crate::api::{self, auth::Tokens, extract::BodyLimit};
use crate::config::Settings;
use crate::engine::Engine;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::secrets::Cipher;
use crate::services::plan::StoredPlans;
use crate::services::Services;

pub struct Application {
    port: u16,
    server: Server,
    supervisor: Addr<FlowSupervisor>,
    shutdown_timeout: Duration,
    // Kept alive for as long as the application runs.
    _engine: Arc<Engine>,
    _metadata_lock: Option<std::fs::File>,
    /// With PostgreSQL metadata: the connection that holds this instance's name.
    _instance_name: Option<sqlx::PgConnection>,
    db: DatabaseConnection,
    arbiters: Vec<ArbiterHandle>,
}

/// Opens the metadata database: SQLite (WAL, busy timeout) by default, or the configured URL.
pub async fn connect_metadata(settings: &Settings) -> Result<DatabaseConnection, String> {
    let url = settings.database_url();
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(settings.database.max_connections.max(1))
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    let db = Database::connect(options).await.map_err(|e| {
        format!(
            "cannot open the metadata database: {}",
            crate::secrets::redact_urls(&e.to_string())
        )
    })?;
    migration::Migrator::up(&db, None).await.map_err(|e| {
        format!(
            "migrating the metadata database: {}",
            crate::secrets::redact_urls(&e.to_string())
        )
    })?;
    Ok(db)
}

/// The file of an SQLite metadata URL (`sqlite://path?mode=rwc`, `sqlite:path`); `None` for
/// another database or an in-memory one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// Holds SQLite metadata for this process: a second process on the same file would recover and
/// run the flows the first one is running. The lock is on `<file>.lock` and goes with the
/// process (also when it is killed). PostgreSQL metadata takes no lock.
pub fn lock_sqlite_metadata(settings: &Settings) -> Result<Option<std::fs::File>, String> {
    let Some(db) = sqlite_file(&settings.database_url()) else {
        return Ok(None);
    };
    let path = PathBuf::from(format!("{}.lock", db.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another Sluice process is using the metadata database {}: SQLite metadata serves one process at a time (stop the other one, or give each its own data_dir; several instances need PostgreSQL metadata, database.url)",
            db.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Takes this instance's name on the metadata database, waiting up to two seconds for a
/// process that held it and has just died (its database session ends a moment after it).
async fn hold_instance_name(leases: &Leases) -> Result<Option<sqlx::PgConnection>, crate::repo::RepoError> {
    for _ in 0..20 {
        if let Some(conn) = leases.hold_name().await? {
            return Ok(Some(conn));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

impl Application {
    /// Builds everything; must run inside an actix System.
    pub async fn build(settings: Settings) -> Result<Application, String> {
        let settings = Arc::new(settings);
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", settings.data_dir.display()))?;
        if settings.auth.tokens.is_empty() {
            if !is_loopback(&settings.server.host) && !settings.auth.allow_anonymous {
                return Err(format!(
                    "refusing to listen on {} without authentication: set auth.tokens, or auth.allow_anonymous = true to allow it",
                    settings.server.host
                ));
            }
            tracing::warn!(
                "no API tokens are configured (auth.tokens): anyone who can reach {} can use the API",
                settings.server.host
            );
        }
        let metadata_lock = lock_sqlite_metadata(&settings)?;
        let db = connect_metadata(&settings).await?;
        let cipher = Cipher::load_or_create(&settings.data_dir).map_err(|e| e.to_string())?;
        let engine = Engine::new(&settings.engine, &settings.data_dir)
            .map_err(|e| format!("cannot start the engine: {e}"))?;
        // PostgreSQL metadata: one of any number of instances, sharing the flows by leases.
        let leases = Leases::for_database(
            &db,
            settings.instance_id(),
            Duration::from_secs(settings.engine.lease_timeout_s),
        )
        .map(Arc::new);
        let instance_name = match &leases {
            Some(leases) => match hold_instance_name(leases).await {
                Ok(Some(conn)) => Some(conn),
                Ok(None) => {
                    return Err(format!(
                        "another Sluice instance named {} is running on this metadata database: give each instance its own instance_id (or leave it empty for a new one at every start)",
                        leases.instance()
                    ))
                }
                Err(e) => return Err(format!("cannot register this instance: {e}")),
            },
            None => None,
        };
        if let Some(leases) = &leases {
            tracing::info!(
                instance = leases.instance(),
                lease_s = settings.engine.lease_timeout_s,
                "PostgreSQL metadata: flows are claimed by lease, with any other instances on this database"
            );
        }

        // The Persister and the supervisor (with the flows it starts) get a thread each.
        let arbiters = vec![Arbiter::new().handle(), Arbiter::new().handle()];
        let events = Arc::new(EventHub::new());
        let metrics = Arc::new(Metrics::new());
        let persister = {
            let (db, events, metrics) = (db.clone(), events.clone(), metrics.clone());
            let interval = Duration::from_millis(settings.engine.persist_interval_ms);
            let owner = leases.as_ref().map(|l| l.instance().to_string());
            Persister::start_in_arbiter(&arbiters[0], move |_| {
                Persister::new(db, interval)
                    .observed(events, metrics)
                    .fenced(owner)
            })
        };
        let supervisor = {
            let (db, engine, persister) = (db.clone(), engine.clone(), persister.clone());
            let plans: Arc<dyn PlanLoader> = Arc::new(StoredPlans::new(
                db.clone(),
                cipher.clone(),
                engine.clone(),
                settings.engine.max_log_lines,
            ));
            let config = SupervisorConfig {
                max_running_flows: settings.engine.max_running_flows,
                max_restarts: settings.engine.max_restarts,
                retry_retention: Duration::from_secs(settings.engine.retry_retention_h.saturating_mul(3600)),
                leases: leases.clone(),
                metrics: metrics.clone(),
            };
            FlowSupervisor::start_in_arbiter(&arbiters[1], move |_| {
                FlowSupervisor::new(db, engine, persister, plans, config)
            })
        };
        supervisor
            .send(Recover)
            .await
            .map_err(|e| format!("starting the flow supervisor: {e}"))?;

        let services = Services {
            db: db.clone(),
            settings: settings.clone(),
            cipher,
            supervisor: supervisor.clone(),
            persister,
            events,
            metrics,
            engine: engine.clone(),
            leases,
        };
        let listener =
            TcpListener::bind((settings.server.host.as_str(), settings.server.port)).map_err(|e| {
                format!(
                    "cannot listen on {}:{}: {e}",
                    settings.server.host, settings.server.port
                )
            })?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let port = address.port();
        let tokens = Tokens(settings.auth.tokens.clone());
        let body_limit = BodyLimit(settings.server.max_body_bytes);
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(api::observe::count_requests))
                .wrap(TracingLogger::default())
                .app_data(web::Data::new(services.clone()))
                .app_data(web::Data::new(tokens.clone()))
                .app_data(web::Data::new(body_limit))
                .configure(api::routes)
        })
        .client_request_timeout(Duration::from_secs(settings.server.client_request_timeout_s))
        .client_disconnect_timeout(Duration::from_secs(5))
        .shutdown_timeout(settings.server.shutdown_timeout_s)
        // Signals are handled by `run_until_stopped` (actix would stop the whole System, and
        // with it the flows, before they are parked).
        .disable_signals();
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|e| format!("cannot serve on {address}: {e}"))?
            .run();
        tracing::info!(%address, "sluice listening on http://{address}");
        Ok(Application {
            port,
            server,
            supervisor,
            shutdown_timeout: Duration::from_secs(settings.server.shutdown_timeout_s),
            _engine: engine,
            _metadata_lock: metadata_lock,
            _instance_name: instance_name,
            db,
            arbiters,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully from elsewhere (tests, signals).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Stops gracefully on SIGTERM or Ctrl-C: no new requests, in-flight ones finish, running
    /// flows are parked for the next start. For the binary; tests stop through `handle()`.
    pub fn stop_on_signals(&self) {
        let handle = self.server.handle();
        actix_web::rt::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutting down gracefully");
            handle.stop(true).await;
        });
    }

    /// Serves until stopped (a signal after `stop_on_signals`, or `handle().stop()`), then parks
    /// running flows so the next start resumes them.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped; parking running flows");
        let _ = self
            .supervisor
            .send(Park {
                timeout: self.shutdown_timeout,
            })
            .await;
        let _ = self.db.close().await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        tracing::info!("shut down");
        result
    }
}

/// Waits for SIGTERM or Ctrl-C; returns which.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_an_sqlite_url() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/sluice/sluice.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/sluice/sluice.db"))
        );
        assert_eq!(sqlite_file("sqlite:meta.db"), Some(PathBuf::from("meta.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn one_process_holds_sqlite_metadata() {
        let temp = tempfile::tempdir().unwrap();
        let settings = Settings::load_with(
            None,
            vec![("SLUICE__DATA_DIR".to_string(), temp.path().display().to_string())],
        )
        .unwrap();
        let held = lock_sqlite_metadata(&settings).unwrap();
        assert!(held.is_some());
        let second = lock_sqlite_metadata(&settings).unwrap_err();
        assert!(
            second.starts_with("another Sluice process is using the metadata database"),
            "{second}"
        );
        drop(held);
        assert!(
            lock_sqlite_metadata(&settings).unwrap().is_some(),
            "free again once released"
        );
    }
}
