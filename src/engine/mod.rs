//! The SQL engine: Apache DataFusion on a dedicated multi-thread Tokio runtime (actix arbiters
//! are single-threaded and must never run queries), one session per flow with a memory limit
//! carved out of a shared pool, and the units of a flow (see `domain::plan`): inlined nodes as
//! views with boundaries (`boundary`), sources as tables (`source_table`), materialized nodes
//! checkpointed as Arrow IPC in the flow's work directory (`checkpoint`), outputs staged and
//! published (`publish`). Knows nothing of actors or HTTP.

pub mod boundary;
pub mod check;
pub mod checkpoint;
pub mod cursor_read;
pub mod decimal_cast;
pub mod dedupe;
pub mod eager_aggregate;
pub mod errors;
#[cfg(all(feature = "fault-injection", debug_assertions))]
pub mod faults;
pub mod memory;
pub mod merge_key;
pub mod publish;
pub mod source_table;
pub mod unit;
pub mod yield_points;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use tokio_util::sync::CancellationToken;

use crate::config::EngineSettings;
use crate::connectors::{IoContext, Load};
use crate::domain::store::DataStore;

/// The engine's own runtime. Dropping it never blocks (so it may be dropped anywhere, even
/// inside another runtime): its threads are shut down in the background.
pub struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            threads
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sluice-engine")
            .enable_all()
            .build()?;
        Ok(EngineRuntime(Some(rt)))
    }

    // The runtime is taken out only by `drop`: it is always there before.
    #[allow(clippy::expect_used)]
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("runtime is present until drop").handle()
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Debug builds: panics when blocking file work is called on an actix arbiter thread. The
/// supervisor and every FlowActor and TaskActor share one arbiter; a blocking call there stalls
/// every flow (and the supervisor). Such work belongs on the engine runtime or a blocking
/// thread; this makes a call that forgot it fail the tests. Nothing in release builds.
#[track_caller]
pub fn debug_assert_off_arbiter(what: &str) {
    debug_assert!(
        actix_rt::Arbiter::try_current().is_none(),
        "{what} is blocking file work: run it on the engine runtime, not on an actix arbiter"
    );
}

/// Reads `data_dir/instance-id`, creating it (8 random hex digits) on first start: the
/// deployment's id in staging names, shared by every instance on this data directory.
fn instance_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if id.trim().len() == 8 && id.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(id.trim().to_ascii_lowercase())
        }
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not 8 hex digits",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("{:08x}", rand::random::<u32>());
            // Instances starting at once on one new (shared) data directory agree on one id.
            if crate::secrets::create_once(&path, id.as_bytes())? {
                return Ok(id);
            }
            instance_id(data_dir)
        }
        Err(e) => Err(e),
    }
}

/// The engine: runtime, shared memory pool, where flows keep their work.
pub struct Engine {
    runtime: EngineRuntime,
    pool: Arc<dyn MemoryPool>,
    work_root: PathBuf,
    batch_size: usize,
    threads: usize,
    pools: crate::connectors::pools::Pools,
    instance: String,
}

/// One flow's engine state: its base session (configuration, memory limit, planner; no tables),
/// its work directory, and the checkpoints of its materialized nodes as tables. Every unit runs
/// in a context of its own built from these (see [`FlowSession::unit_context`]), so units that
/// run at once never see each other's inlined nodes.
pub struct FlowSession {
    base: SessionState,
    pub work_dir: PathBuf,
    tables: std::sync::Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// Units run holding it shared; a unit that ran out of memory runs again holding it alone,
    /// with the flow's whole memory to itself.
    pub memory_gate: tokio::sync::RwLock<()>,
}

/// What the engine's flow-level steps fail with: setting up a flow's session, reading back its
/// checkpoints, publishing or discarding its outputs. The message is for people (DataFusion's
/// cleaned); the cause stays attached as the source.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A sink or source failed; its kind says whether another attempt may succeed.
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    /// A file or directory of the flow's work directory.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// DataFusion refused: `message` is its cleaned wording.
    #[error("{context}{message}")]
    DataFusion {
        context: String,
        message: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// A blocking step's task did not finish (it panicked or was cancelled).
    #[error("{context}: {source}")]
    Join {
        context: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl EngineError {
    /// DataFusion error `source`, worded for people, after `context` (which ends with its own
    /// separator, or is empty).
    fn datafusion(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        EngineError::DataFusion {
            context: context.into(),
            message: crate::connectors::error::clean_message(&source),
            source: Box::new(source),
        }
    }
}

impl FlowSession {
    /// A fresh context for one unit: the flow's settings, and every checkpoint so far.
    pub fn unit_context(&self) -> Result<SessionContext, EngineError> {
        let options = self.base.config().options();
        let (catalog_name, schema_name) = (
            options.catalog.default_catalog.clone(),
            options.catalog.default_schema.clone(),
        );
        let schema = Arc::new(MemorySchemaProvider::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema(&schema_name, schema.clone())
            .map_err(|e| EngineError::datafusion("", e))?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(catalog_name, catalog);
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        for (name, table) in tables.iter() {
            schema
                .register_table(name.clone(), Arc::clone(table))
                .map_err(|e| EngineError::datafusion("", e))?;
        }
        drop(tables);
        let state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(catalogs)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Makes node `name`'s checkpoint readable by the units that start from now on.
    pub fn add_table(&self, name: &str, table: Arc<dyn TableProvider>) {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), table);
    }

    /// Registers the checkpoint an earlier run left for node `name`.
    pub async fn restore(&self, name: &str) -> Result<(), EngineError> {
        let table = checkpoint::table(&self.base, &self.work_dir, name)
            .await
            .map_err(|e| EngineError::datafusion(format!("reading the checkpoint of {name}: "), e))?;
        self.add_table(name, table);
        Ok(())
    }

    /// The flow's base session state (for reading checkpoints).
    pub fn state(&self) -> &SessionState {
        &self.base
    }

    /// A context over the base state, with no tables.
    pub fn base_context(&self) -> SessionContext {
        SessionContext::new_with_state(self.base.clone())
    }
}

/// Pins glibc's mmap threshold at 1 MiB. Left dynamic, glibc raises it each time a large
/// block is freed, after which batch-sized buffers come from per-thread arenas and, freed on
/// another thread than the one that allocated them, pile up: the resident size of a long read
/// crept up with the rows moved (78 → 93 → 103 MiB at 200k, 2M, 5M rows of PostgreSQL →
/// Parquet). Pinned at 1 MiB it stays flat once the first Parquet row group is full (75, 81,
/// 82 MiB) for about 10–15% of that copy's time (PostgreSQL → PostgreSQL is unaffected); at
/// 128 KiB it is lower still but slower.
#[allow(unsafe_code)]
fn pin_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

impl Engine {
    pub fn new(settings: &EngineSettings, data_dir: &std::path::Path) -> std::io::Result<Arc<Engine>> {
        pin_malloc_mmap_threshold();
        let runtime = EngineRuntime::new(settings.threads)?;
        let threads = if settings.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            settings.threads
        };
        let work_root = data_dir.join("work");
        std::fs::create_dir_all(&work_root)?;
        let limit = (settings.memory_limit_mb as usize).saturating_mul(1024 * 1024);
        Ok(Arc::new(Engine {
            runtime,
            pool: Arc::new(FairSpillPool::new(limit)),
            work_root,
            batch_size: settings.batch_size,
            threads,
            pools: Default::default(),
            instance: instance_id(data_dir)?,
        }))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// This installation's id (kept in the data directory): part of every staging name, so two
    /// Sluice servers writing into one database never touch each other's staged loads.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Makes every staged load of a flow visible in `store`; returns the sink's notes for the
    /// flow's log.
    pub async fn publish(&self, store: &DataStore, loads: &[Load]) -> Result<Vec<String>, EngineError> {
        publish::publish(store, loads, &self.pools).await
    }

    /// Removes whatever is staged for the loads in `store`.
    pub async fn discard(&self, store: &DataStore, loads: &[Load]) -> Result<(), EngineError> {
        publish::discard(store, loads, &self.pools).await
    }

    /// Connects to `store` through its pool and reports latency and server version, or why it
    /// cannot be used (within `within`).
    pub async fn check_store(
        &self,
        store: &DataStore,
        within: std::time::Duration,
    ) -> Result<crate::connectors::CheckReport, crate::connectors::ConnectorError> {
        tokio::time::timeout(within, crate::connectors::check(store, &self.pools))
            .await
            .unwrap_or_else(|_| {
                Err(crate::connectors::ConnectorError::transient(format!(
                    "no answer within {} s",
                    within.as_secs()
                )))
            })
    }

    /// What the connectors that a unit of a flow calls get: the flow's session, the flow's
    /// cancellation token, the batch size and the shared connection pools.
    pub fn io_context(&self, session: &FlowSession, cancel: CancellationToken) -> IoContext {
        IoContext {
            session: session.base_context(),
            cancel,
            batch_size: self.batch_size,
            pools: self.pools.clone(),
        }
    }

    /// Where flow `flow_id` keeps its checkpoints.
    pub fn work_dir(&self, flow_id: i64) -> PathBuf {
        self.work_root.join(format!("flow-{flow_id}"))
    }

    /// A fresh directory beside the work directories, for a retry to take checkpoints over into
    /// before its flow exists (then renamed to its `work_dir`; `stale_retry_staging` finds the
    /// ones a crash left).
    pub fn retry_staging_dir(&self) -> PathBuf {
        self.work_root
            .join(format!(".retry-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Retry staging directories (`retry_staging_dir`) last changed more than `age` ago: left
    /// by a process that stopped between taking checkpoints over and creating the flow.
    /// Blocking.
    pub fn stale_retry_staging(&self, age: std::time::Duration) -> Vec<PathBuf> {
        debug_assert_off_arbiter("listing work directories");
        let Ok(entries) = std::fs::read_dir(&self.work_root) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".retry-"))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|elapsed| elapsed > age)
            })
            .map(|e| e.path())
            .collect()
    }

    /// The flows that have a work directory (`work_dir`). Blocking: call it off the actors'
    /// threads.
    pub fn flows_with_work_dirs(&self) -> std::io::Result<Vec<i64>> {
        debug_assert_off_arbiter("listing work directories");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.work_root)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("flow-"))
                .and_then(|n| n.parse::<i64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// A session for one flow, limited to `memory_limit_mb` of the shared pool, spilling into
    /// its work directory. Creates the directory (on a blocking thread: this is called from the
    /// flow's actor).
    pub async fn session(&self, flow_id: i64, memory_limit_mb: u64) -> Result<FlowSession, EngineError> {
        // Building the runtime creates DataFusion's temporary directory.
        debug_assert_off_arbiter("setting up a flow's session");
        let work_dir = self.work_dir(flow_id);
        let spill_dir = work_dir.join("spill");
        let create = spill_dir.clone();
        let context = || format!("creating {}", spill_dir.display());
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(&create))
            .await
            .map_err(|source| EngineError::Join {
                context: context(),
                source,
            })?
            .map_err(|source| EngineError::Io {
                context: context(),
                source,
            })?;
        let pool = memory::FlowMemoryPool::new(
            self.pool.clone(),
            (memory_limit_mb as usize).saturating_mul(1024 * 1024),
            flow_id,
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir])),
            )
            .build_arc()
            .map_err(|e| EngineError::datafusion("building the flow's runtime: ", e))?;
        let mut config = SessionConfig::new()
            .with_batch_size(self.batch_size)
            .with_target_partitions(self.threads.max(1))
            .with_information_schema(false);
        let options = config.options_mut();
        options.sql_parser.collect_spans = true;
        options.sql_parser.enable_ident_normalization = true;
        // Every partition of every sort keeps this much back for merging its spill files; the
        // default (10 MB) alone would fill a small limit. A fraction of the flow's memory.
        let limit = (memory_limit_mb as usize).saturating_mul(1024 * 1024);
        options.execution.sort_spill_reservation_bytes = (limit / 32).clamp(256 * 1024, 10 * 1024 * 1024);
        // Outputs written by DataFusion's Parquet writer: fast compression, and DataFusion's
        // row groups of a million rows. Smaller ones cost more than they save: every row group
        // starts each column's dictionary afresh, and a column with many distinct values is
        // interned again until its dictionary outgrows the page limit (measured: 128k-row
        // groups made CSV → Parquet 1.5x slower than DataFusion's COPY).
        options.execution.parquet.compression = Some("snappy".into());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(Arc::new(boundary::SluiceQueryPlanner))
            .with_optimizer_rule(Arc::new(dedupe::DedupeRule))
            .with_optimizer_rule(Arc::new(decimal_cast::FastDecimalCast))
            .with_optimizer_rule(Arc::new(eager_aggregate::AggregateBelowJoin))
            .with_physical_optimizer_rule(Arc::new(yield_points::YieldAfterJoins))
            .build();
        #[cfg(all(feature = "fault-injection", debug_assertions))]
        let state = {
            let ctx = SessionContext::new_with_state(state);
            faults::register(&ctx);
            ctx.state()
        };
        Ok(FlowSession {
            base: state,
            work_dir,
            tables: Default::default(),
            memory_gate: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unit_gets_its_flows_session_and_token_and_the_configured_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::config::Settings::load_with(None, Vec::new())
            .unwrap()
            .engine;
        settings.threads = 1;
        settings.batch_size = 1234;
        let engine = Engine::new(&settings, dir.path()).unwrap();
        let session = engine.session(7, 64).await.unwrap();
        let cancel = CancellationToken::new();
        let io = engine.io_context(&session, cancel.clone());
        assert_eq!(io.batch_size, 1234);
        assert_eq!(io.session.state().config().batch_size(), 1234);
        cancel.cancel();
        assert!(io.cancel.is_cancelled(), "the flow's token, not a copy");
    }
}
