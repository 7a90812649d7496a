//! Flows: create (READY, then handed to the supervisor; a retry takes over the checkpoints of
//! the flow it retries first), read (live from the Persister while running), list, cancel.

use std::collections::HashSet;

use entity::flow;

use super::Services;
use crate::actors::messages::{CancelFlow, CancelOutcome, GetPicture, StartFlow};
use crate::domain::dag::Dag;
use crate::domain::flow::{FlowEvent, FlowPicture, FlowState, Level, TaskState};
use crate::domain::plan::{RunPlan, UnitKind};
use crate::domain::spec::{FlowInputSpec, SourceRead};
use crate::domain::store::{Connection, StoreKind};
use crate::engine::checkpoint;
use crate::error::AppError;
use crate::repo::{self, Page};

/// A flow and its output.
pub struct FlowRecord {
    pub flow: flow::Model,
    pub output: FlowPicture,
}

/// Whether a file under `root` that `pattern` names (every file below `root` without one) was
/// modified after `since`, or the files cannot be listed.
fn files_changed_since(root: &std::path::Path, pattern: Option<&str>, since: std::time::SystemTime) -> bool {
    let newer = |path: &std::path::Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |modified| modified > since)
    };
    let mut stack: Vec<std::path::PathBuf> = match pattern {
        Some(pattern) => match glob::glob(&root.join(pattern).to_string_lossy()) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(_) => return true,
        },
        None => vec![root.to_path_buf()],
    };
    if stack.is_empty() {
        return true;
    }
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(entries.filter_map(Result::ok).map(|e| e.path())),
                Err(_) => return true,
            }
        } else if newer(&path) {
            return true;
        }
    }
    false
}

/// What a retry takes over from the flow it retries.
struct Reuse {
    /// The flow retried.
    from: i64,
    /// The checkpoints taken over (`checkpoint::link`), in a directory that becomes the new
    /// flow's work directory.
    staging: std::path::PathBuf,
    /// Every node those checkpoints finish (with the nodes inlined into them), in the DAG's
    /// order, with the rows the retried flow reported for it.
    nodes: Vec<(String, Option<u64>)>,
    /// Checkpoints kept but not reused: they were computed from `changed_sources`.
    stale: Vec<String>,
    /// File sources whose files changed since the retried flow started.
    changed_sources: Vec<String>,
}

impl Services {
    /// Starts a flow of input `flow_input_id`; with `retry_of`, one that reuses what that
    /// (FAILED or CANCELLED) flow of the same input finished and kept, and runs the rest.
    #[tracing::instrument(skip(self))]
    pub async fn create_flow(
        &self,
        flow_input_id: i64,
        full_refresh: bool,
        retry_of: Option<i64>,
    ) -> Result<FlowRecord, AppError> {
        let input = repo::get_flow_input(&self.db, flow_input_id)
            .await?
            .ok_or_else(|| {
                AppError::invalid(
                    "flow_input_id",
                    format!("flow input {flow_input_id} does not exist"),
                )
            })?;
        let (spec, dag) = repo::flow_input_spec(&input)?;
        let reuse = match retry_of {
            Some(old) => Some(self.reusable(flow_input_id, old, &spec, &dag).await?),
            None => None,
        };
        // A retry of a full refresh is one too: what it reuses read everything, so must the rest.
        let full_refresh = full_refresh
            || match &reuse {
                Some(reuse) => repo::get_flow(&self.db, reuse.from)
                    .await?
                    .is_some_and(|(old, _)| old.full_refresh),
                None => false,
            };
        let max_lines = self.settings.engine.max_log_lines;
        let mut picture = FlowPicture::new_ready(0, &dag, max_lines).with_checks(&spec.checks);
        if let Some(reuse) = &reuse {
            let done: HashSet<String> = reuse.nodes.iter().map(|(n, _)| n.clone()).collect();
            picture.resume(&done);
            for task in picture.tasks.iter_mut() {
                if let Some((_, rows)) = reuse.nodes.iter().find(|(n, _)| *n == task.name) {
                    task.rows = *rows;
                }
            }
            let names: Vec<&str> = reuse.nodes.iter().map(|(n, _)| n.as_str()).collect();
            picture.apply(
                &FlowEvent::Log {
                    level: Level::Info,
                    task: None,
                    message: format!(
                        "retry of flow {}: reusing {} node(s) it finished: {}; running the other {}",
                        reuse.from,
                        names.len(),
                        names.join(", "),
                        picture.tasks.len() - names.len()
                    ),
                },
                crate::domain::time::now(),
            );
            if !reuse.stale.is_empty() {
                picture.apply(
                    &FlowEvent::Log {
                        level: Level::Info,
                        task: None,
                        message: format!(
                            "not reused: {} (read from source(s) whose files changed since flow {} started: {})",
                            reuse.stale.join(", "),
                            reuse.from,
                            reuse.changed_sources.join(", ")
                        ),
                    },
                    crate::domain::time::now(),
                );
            }
        }
        let (flow, output) = repo::create_flow(
            &self.db,
            flow_input_id,
            picture,
            full_refresh,
            spec.is_incremental(),
        )
        .await?;
        if let Some(reuse) = reuse {
            // The checkpoints become the new flow's own before the supervisor looks for them.
            let to = self.engine.work_dir(flow.id);
            let moved = tokio::fs::rename(&reuse.staging, &to).await;
            if let Err(e) = moved {
                // Its checkpoints are then computed again (the supervisor finds none).
                tracing::warn!(flow_id = flow.id, error = %e, "a retry could not take over its checkpoints");
                let _ = tokio::fs::remove_dir_all(&reuse.staging).await;
            }
        }
        let output = repo::picture_from_model(output, max_lines)?;
        self.supervisor.do_send(StartFlow {
            flow_id: flow.id,
            exclusive_input: spec.is_incremental().then_some(flow_input_id),
        });
        tracing::info!(flow_id = flow.id, retry_of, "flow created");
        Ok(FlowRecord { flow, output })
    }

    /// What a retry of flow `old` (for input `flow_input_id`, planned as `dag`) can reuse:
    /// 422 when `old` does not exist or kept nothing, 409 when it is not of that input or did
    /// not end FAILED or CANCELLED.
    async fn reusable(
        &self,
        flow_input_id: i64,
        old: i64,
        spec: &FlowInputSpec,
        dag: &Dag,
    ) -> Result<Reuse, AppError> {
        let record = match self.get_flow(old).await {
            Ok(record) => record,
            Err(AppError::NotFound { .. }) => {
                return Err(AppError::invalid(
                    "retry_of",
                    format!("flow {old} does not exist"),
                ))
            }
            Err(e) => return Err(e),
        };
        if record.flow.flow_input_id != flow_input_id {
            return Err(AppError::Conflict(format!(
                "flow {old} is a flow of flow input {}, not of {flow_input_id}: a retry runs the same input",
                record.flow.flow_input_id
            )));
        }
        let state = record.output.state;
        if !matches!(state, FlowState::Failed | FlowState::Cancelled) {
            let why = if state.is_final() {
                "only a FAILED or CANCELLED flow can be retried".to_string()
            } else {
                "it has not finished yet; retry it once it is FAILED or CANCELLED".to_string()
            };
            return Err(AppError::Conflict(format!("flow {old} is {state}: {why}")));
        }
        // A checkpoint is reused when it is whole (`checkpoint::is_valid`, the test a restart
        // applies) and the node it holds is a materialized node of this input's plan, computed
        // without reading an incremental source itself: such a unit reads again from where the
        // input's cursors stand now (as a restarted flow without its cursor record does).
        let run = RunPlan::new(dag);
        let work_dir = self.engine.work_dir(old);
        let units = run.clone();
        let incremental: HashSet<String> = spec.cursor_sources().map(|(s, _)| s.name.clone()).collect();
        let mut kept: HashSet<String> = tokio::task::spawn_blocking(move || {
            units
                .units
                .iter()
                .filter(|u| u.kind == UnitKind::Materialize && !u.nodes().any(|n| incremental.contains(n)))
                .filter(|u| checkpoint::is_valid(&work_dir, &u.name))
                .map(|u| u.name.clone())
                .collect()
        })
        .await
        .map_err(|e| AppError::internal("reading checkpoints", e))?;
        if kept.is_empty() {
            let retention = self.settings.engine.retry_retention_h;
            return Err(AppError::invalid(
                "retry_of",
                format!(
                    "flow {old} kept nothing to reuse (no checkpoint of a finished node: it failed before one was \
                     written, its checkpoints are past engine.retry_retention_h = {retention} or a later flow of \
                     the input completed); start a plain flow instead"
                ),
            ));
        }
        // A checkpoint computed from a file source whose files changed since the flow started
        // (modified or added) holds data that is no longer there: computed again.
        let changed_sources = match record.output.started_utc {
            Some(started) => self.changed_file_sources(spec, started).await?,
            None => Vec::new(),
        };
        // Per changed source, every node computed from it.
        let downstream = |source: &str| -> HashSet<String> {
            let mut out: HashSet<String> = std::iter::once(source.to_string()).collect();
            let mut stack = vec![source.to_string()];
            while let Some(node) = stack.pop() {
                for reader in dag.dependents(&node) {
                    if out.insert(reader.name.clone()) {
                        stack.push(reader.name.clone());
                    }
                }
            }
            out
        };
        let mut tainted: HashSet<String> = HashSet::new();
        let mut changed_sources: Vec<String> = changed_sources
            .into_iter()
            .filter(|source| {
                let reach = downstream(source);
                let matters = kept.iter().any(|k| reach.contains(k));
                tainted.extend(reach);
                matters
            })
            .collect();
        changed_sources.sort_by_key(|s| dag.order.iter().position(|o| o == s));
        let stale_units: HashSet<String> = kept.iter().filter(|n| tainted.contains(*n)).cloned().collect();
        let stale_nodes = run.done_nodes(|u| stale_units.contains(&u.name));
        let stale: Vec<String> = dag
            .order
            .iter()
            .filter(|n| stale_nodes.contains(*n))
            .cloned()
            .collect();
        kept.retain(|n| !tainted.contains(n));
        if kept.is_empty() {
            return Err(AppError::invalid(
                "retry_of",
                format!(
                    "flow {old} kept checkpoints, but every one was computed from source(s) whose files changed \
                     since it started ({}): nothing can be reused; start a plain flow instead",
                    changed_sources.join(", ")
                ),
            ));
        }
        let in_order = |names: &HashSet<String>| -> Vec<String> {
            dag.order.iter().filter(|n| names.contains(*n)).cloned().collect()
        };
        // Taken over now (hard links: no bytes copied) into a directory of its own, which
        // becomes the new flow's work directory once the flow exists: what the new flow's
        // picture and log say it reuses is exactly what it has. One that cannot be taken over
        // (gone meanwhile) is computed again.
        let staging = self.engine.retry_staging_dir();
        let (from, into) = (self.engine.work_dir(old), staging.clone());
        let wanted = in_order(&kept);
        let linked: HashSet<String> = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .filter(|node| match checkpoint::link(&from, &into, node) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(retry_of = old, node = %node, error = %e, "a retry could not take over a checkpoint; it is computed again");
                        false
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| AppError::internal("linking checkpoints", e))?;
        if linked.is_empty() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(AppError::invalid(
                "retry_of",
                format!("flow {old} kept nothing to reuse any more (its checkpoints went meanwhile); start a plain flow instead"),
            ));
        }
        let kept = linked;
        let done = run.done_nodes(|u| kept.contains(&u.name));
        let nodes = in_order(&done)
            .into_iter()
            .map(|name| {
                let rows = record
                    .output
                    .tasks
                    .iter()
                    .find(|t| t.name == name && t.state == TaskState::Completed)
                    .and_then(|t| t.rows);
                (name, rows)
            })
            .collect();
        Ok(Reuse {
            from: old,
            staging,
            nodes,
            stale,
            changed_sources,
        })
    }

    /// The file sources of `spec` with a file modified or added since `since` (or whose files
    /// cannot be listed any more). Database sources are not looked at: nothing cheap tells
    /// whether a table changed (a retry reuses what the failed flow read from them).
    async fn changed_file_sources(
        &self,
        spec: &FlowInputSpec,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, AppError> {
        let mut roots = Vec::new();
        for source in &spec.sources {
            let SourceRead::Path(pattern) = source.read() else {
                continue;
            };
            let Some(model) = repo::get_store(&self.db, source.store_id).await? else {
                continue;
            };
            if model.kind == StoreKind::RelationalDb.as_str() {
                continue;
            }
            let Ok(Connection::File(file)) = repo::store_connection(&model) else {
                continue;
            };
            roots.push((
                source.name.clone(),
                std::path::PathBuf::from(file.path),
                pattern.map(str::to_string),
            ));
        }
        let since = std::time::SystemTime::from(since);
        tokio::task::spawn_blocking(move || {
            roots
                .into_iter()
                .filter(|(_, root, pattern)| files_changed_since(root, pattern.as_deref(), since))
                .map(|(name, _, _)| name)
                .collect()
        })
        .await
        .map_err(|e| AppError::internal("looking at source files", e))
    }

    pub async fn get_flow(&self, id: i64) -> Result<FlowRecord, AppError> {
        let (flow, output) = repo::get_flow(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("flow", id))?;
        // A running flow's freshest picture is the Persister's (the stored one lags by at most
        // persist_interval_ms).
        let live = self
            .persister
            .send(GetPicture { flow_id: id })
            .await
            .ok()
            .flatten();
        let output = match live {
            Some(p) => p,
            None => repo::picture_from_model(output, self.settings.engine.max_log_lines)?,
        };
        Ok(FlowRecord { flow, output })
    }

    pub async fn list_flows(
        &self,
        state: Option<FlowState>,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<Page<FlowRecord>, AppError> {
        let page = repo::list_flows(&self.db, state, limit, before_id).await?;
        let items = page
            .items
            .into_iter()
            .map(|(flow, output)| {
                Ok(FlowRecord {
                    flow,
                    output: repo::picture_from_model(output, self.settings.engine.max_log_lines)?,
                })
            })
            .collect::<Result<_, AppError>>()?;
        Ok(Page {
            items,
            next_before_id: page.next_before_id,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn cancel_flow(&self, id: i64) -> Result<FlowRecord, AppError> {
        // A flow that shows a final state has ended, even while its actor is still winding down
        // (and so still registered with the supervisor, which would answer `Sent`).
        let current = self.get_flow(id).await?;
        if current.output.state.is_final() {
            return Err(AppError::Conflict(format!(
                "flow {id} has already ended: it is {}",
                current.output.state
            )));
        }
        let outcome = self
            .supervisor
            .send(CancelFlow { flow_id: id })
            .await
            .map_err(|e| AppError::internal("flow supervisor", e))?;
        match outcome {
            CancelOutcome::Cancelled | CancelOutcome::Sent => self.get_flow(id).await,
            CancelOutcome::AlreadyFinal(state) => Err(AppError::Conflict(format!(
                "flow {id} has already ended: it is {state}"
            ))),
            CancelOutcome::Unknown => {
                let record = self.get_flow(id).await?;
                if record.output.state.is_final() {
                    Err(AppError::Conflict(format!(
                        "flow {id} has already ended: it is {}",
                        record.output.state
                    )))
                } else {
                    Err(AppError::Conflict(format!(
                        "flow {id} is {} but not scheduled in this process (it is being shut down); try again",
                        record.output.state
                    )))
                }
            }
        }
    }
}
