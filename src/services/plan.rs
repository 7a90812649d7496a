//! Loading a flow's plan for the FlowSupervisor (`actors::PlanLoader`): the flow, its input's
//! spec and DAG (decoded once, here), its stores with passwords opened, which nodes an earlier
//! run completed (checkpoints and staged outputs in its work directory), and where its cursor
//! sources start. Also what a flow may have staged in its target, and which flows a previous
//! process left unfinished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use entity::flow;
use sea_orm::DatabaseConnection;

use crate::actors::errors::LoadError;
use crate::actors::plan_loader::{LoadedFlow, PlanLoader, StagedOutputs, Unfinished};
use crate::actors::FlowPlan;
use crate::domain::cursor::{CursorEntry, CursorStart};
use crate::domain::dag::Dag;
use crate::domain::flow::{FlowPicture, FlowState, TaskState};
use crate::domain::plan::{RunPlan, UnitKind};
use crate::domain::spec::FlowInputSpec;
use crate::domain::store::DataStore;
use crate::engine::{checkpoint, cursor_read, publish, Engine};
use crate::repo::{self, RepoError};
use crate::secrets::Cipher;

/// Flow plans from the metadata database and the engine's work directories.
pub struct StoredPlans {
    db: DatabaseConnection,
    cipher: Cipher,
    engine: Arc<Engine>,
    /// How many log and error lines a picture read from the database keeps.
    max_log_lines: usize,
}

impl StoredPlans {
    pub fn new(db: DatabaseConnection, cipher: Cipher, engine: Arc<Engine>, max_log_lines: usize) -> Self {
        StoredPlans {
            db,
            cipher,
            engine,
            max_log_lines,
        }
    }

    /// The spec and DAG of flow input `flow_input_id`, if it exists.
    async fn spec_of(&self, flow_input_id: i64) -> Result<Option<(FlowInputSpec, Dag)>, RepoError> {
        match repo::get_flow_input(&self.db, flow_input_id).await? {
            Some(input) => Ok(Some(repo::flow_input_spec(&input)?)),
            None => Ok(None),
        }
    }

    /// The stores `spec` reads and writes, by id, passwords opened.
    async fn stores_of(&self, spec: &FlowInputSpec) -> Result<HashMap<i64, DataStore>, RepoError> {
        let mut ids: Vec<i64> = spec.sources.iter().map(|s| s.store_id).collect();
        ids.push(spec.target_store_id);
        ids.sort_unstable();
        ids.dedup();
        repo::stores_by_ids(&self.db, &ids)
            .await?
            .into_iter()
            .map(|m| repo::store_from_model(m, &self.cipher).map(|s| (s.id, s)))
            .collect()
    }

    async fn load_flow(
        &self,
        flow_id: i64,
        live: Option<FlowPicture>,
    ) -> Result<Option<LoadedFlow>, LoadError> {
        let (flow, output) = repo::get_flow(&self.db, flow_id)
            .await?
            .ok_or(LoadError::FlowMissing(flow_id))?;
        let (spec, dag) = self
            .spec_of(flow.flow_input_id)
            .await?
            .ok_or(LoadError::InputMissing(flow.flow_input_id))?;
        let stores = self.stores_of(&spec).await?;
        let mut picture = match live {
            Some(p) => p,
            None => repo::picture_from_model(output, self.max_log_lines)?,
        };
        if picture.state.is_final() {
            return Ok(None);
        }
        let run = RunPlan::new(&dag);
        let cursor_sources: Vec<(String, String)> = spec
            .cursor_sources()
            .map(|(s, column)| (s.name.clone(), column.to_string()))
            .collect();
        let saved = self.saved_cursors(flow_id, &cursor_sources).await?;
        let done = self
            .done_nodes(flow_id, &run, &picture, &cursor_sources, &saved)
            .await?;
        let restarted = picture.started_utc.is_some();
        let resync = picture.resume(&done);
        let cursor_starts = self
            .cursor_starts(&flow, &cursor_sources, &saved, &mut picture)
            .await?;
        let plan = FlowPlan {
            flow_id,
            output_id: picture.output_id,
            spec,
            dag,
            run,
            stores,
            cursor_starts,
        };
        Ok(Some(LoadedFlow {
            plan,
            picture,
            done,
            restarted,
            resync,
        }))
    }

    /// What the cursor sources of an earlier run of flow `flow_id` read (saved beside its
    /// checkpoints); read on a blocking thread.
    async fn saved_cursors(
        &self,
        flow_id: i64,
        cursor_sources: &[(String, String)],
    ) -> Result<HashMap<String, CursorEntry>, LoadError> {
        let (dir, names) = (self.engine.work_dir(flow_id), cursor_sources.to_vec());
        tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter_map(|(name, _)| cursor_read::load(&dir, &name).map(|e| (name, e)))
                .collect()
        })
        .await
        .map_err(|e| LoadError::crashed(format!("reading the cursors of flow {flow_id}"), e))
    }

    /// The nodes an earlier run of flow `flow_id` finished: a materialized node with a whole
    /// checkpoint, an output staged, a node the picture shows COMPLETED; reading the work
    /// directory, so on a blocking thread.
    async fn done_nodes(
        &self,
        flow_id: i64,
        run: &RunPlan,
        picture: &FlowPicture,
        cursor_sources: &[(String, String)],
        saved: &HashMap<String, CursorEntry>,
    ) -> Result<HashSet<String>, LoadError> {
        let completed: HashSet<String> = picture
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Completed)
            .map(|t| t.name.clone())
            .collect();
        let unsaved: HashSet<String> = cursor_sources
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !saved.contains_key(name))
            .collect();
        let work_dir = self.engine.work_dir(flow_id);
        let units = run.clone();
        tokio::task::spawn_blocking(move || {
            units.done_nodes(|u| {
                // A unit that read a cursor source counts as done only once what it read is
                // saved (the save follows the unit's own checkpoint, and nothing reads the unit
                // before).
                if u.nodes().any(|n| unsaved.contains(n)) {
                    return false;
                }
                match u.kind {
                    // A checkpoint is committed whole once its node is done, whether or not
                    // the completion was written before the process stopped.
                    UnitKind::Materialize => checkpoint::is_valid(&work_dir, &u.name),
                    UnitKind::Persist => {
                        completed.contains(&u.name) || checkpoint::staged(&work_dir, &u.name).is_some()
                    }
                    UnitKind::Discard | UnitKind::Check => completed.contains(&u.name),
                }
            })
        })
        .await
        .map_err(|e| LoadError::crashed(format!("scanning the checkpoints of flow {flow_id}"), e))
    }

    /// Where the cursor sources of `flow` start: after what the latest completed flow of the
    /// input read (nothing for a full refresh). Computed at every start: while this flow has not
    /// completed, no other flow of its input completes (they run one at a time). The picture's
    /// cursors show what an earlier run of this flow read, else where it starts.
    async fn cursor_starts(
        &self,
        flow: &flow::Model,
        cursor_sources: &[(String, String)],
        saved: &HashMap<String, CursorEntry>,
        picture: &mut FlowPicture,
    ) -> Result<HashMap<String, CursorStart>, RepoError> {
        let mut cursor_starts = HashMap::new();
        if cursor_sources.is_empty() {
            return Ok(cursor_starts);
        }
        let previous = if flow.full_refresh {
            Default::default()
        } else {
            repo::latest_completed_cursors(&self.db, flow.flow_input_id, flow.id).await?
        };
        let read_files = if flow.full_refresh || cursor_sources.iter().all(|(_, c)| !c.is_empty()) {
            Default::default()
        } else {
            repo::completed_cursor_files(&self.db, flow.flow_input_id, flow.id).await?
        };
        for (name, column) in cursor_sources {
            let start = if column.is_empty() {
                // A new_files source: the files any completed flow of the input read.
                CursorStart {
                    files: Some(read_files.get(name).cloned().unwrap_or_default()),
                    ..Default::default()
                }
            } else {
                previous
                    .get(name)
                    .filter(|e| &e.column == column)
                    .map(CursorStart::after)
                    .unwrap_or_default()
            };
            let entry = saved.get(name).cloned().unwrap_or_else(|| start.entry(column));
            picture.cursors.insert(name.clone(), entry);
            cursor_starts.insert(name.clone(), start);
        }
        Ok(cursor_starts)
    }

    async fn staged_of(&self, flow_id: i64) -> Option<StagedOutputs> {
        let (flow, _) = repo::get_flow(&self.db, flow_id).await.ok()??;
        let (spec, _) = self.spec_of(flow.flow_input_id).await.ok()??;
        let model = repo::get_store(&self.db, spec.target_store_id).await.ok()??;
        let store = repo::store_from_model(model, &self.cipher).ok()?;
        let loads = publish::loads(self.engine.instance(), flow_id, &spec.outputs);
        Some(StagedOutputs { store, loads })
    }

    async fn unfinished_flows(&self) -> Result<Vec<Unfinished>, RepoError> {
        let flows = repo::unfinished_flows(&self.db).await?;
        // Which of them belong to incremental inputs (one input's spec read once).
        let mut incremental: HashMap<i64, bool> = HashMap::new();
        for (flow, _) in &flows {
            if incremental.contains_key(&flow.flow_input_id) {
                continue;
            }
            // An input that cannot be read is not incremental (its flow fails when it loads).
            let is = match repo::get_flow_input(&self.db, flow.flow_input_id).await? {
                Some(input) => repo::flow_input_spec(&input).is_ok_and(|(spec, _)| spec.is_incremental()),
                None => false,
            };
            incremental.insert(flow.flow_input_id, is);
        }
        Ok(flows
            .into_iter()
            .map(|(flow, output)| Unfinished {
                flow_id: flow.id,
                exclusive_input: incremental
                    .get(&flow.flow_input_id)
                    .copied()
                    .unwrap_or(false)
                    .then_some(flow.flow_input_id),
                was_running: output.state == FlowState::Running.as_str(),
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl PlanLoader for StoredPlans {
    async fn load(&self, flow_id: i64, live: Option<FlowPicture>) -> Result<Option<LoadedFlow>, LoadError> {
        self.load_flow(flow_id, live).await
    }

    async fn stored_picture(&self, flow_id: i64) -> Option<FlowPicture> {
        let (_, output) = repo::get_flow(&self.db, flow_id).await.ok()??;
        repo::picture_from_model(output, self.max_log_lines).ok()
    }

    async fn staged_outputs(&self, flow_id: i64) -> Option<StagedOutputs> {
        self.staged_of(flow_id).await
    }

    async fn unfinished(&self) -> Result<Vec<Unfinished>, RepoError> {
        self.unfinished_flows().await
    }
}
