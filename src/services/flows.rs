//! Flows: create (READY, then handed to the supervisor; a retry takes over the checkpoints of
//! the flow it retries first), read (live from the Persister while running), list, cancel.

use std::collections::HashSet;

use entity::flow;

use super::repo::{self, Page};
use super::Services;
use crate::actors::messages::{CancelFlow, CancelOutcome, GetPicture, StartFlow};
use crate::domain::dag::Dag;
use crate::domain::flow::{FlowEvent, FlowPicture, FlowState, Level, TaskState};
use crate::domain::plan::{RunPlan, UnitKind};
use crate::engine::checkpoint;
use crate::error::AppError;

/// A flow and its output.
pub struct FlowRecord {
    pub flow: flow::Model,
    pub output: FlowPicture,
}

/// What a retry takes over from the flow it retries.
struct Reuse {
    /// The flow retried.
    from: i64,
    /// The materialized nodes whose checkpoints it kept, in the DAG's order.
    checkpoints: Vec<String>,
    /// Every node those checkpoints finish (with the nodes inlined into them), in the DAG's
    /// order, with the rows the retried flow reported for it.
    nodes: Vec<(String, Option<u64>)>,
}

impl Services {
    /// Starts a flow of input `flow_input_id`; with `retry_of`, one that reuses what that
    /// (FAILED or CANCELLED) flow of the same input finished and kept, and runs the rest.
    #[tracing::instrument(skip(self))]
    pub async fn create_flow(
        &self,
        flow_input_id: i64,
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
        let (_, dag) = repo::flow_input_spec(&input)?;
        let reuse = match retry_of {
            Some(old) => Some(self.reusable(flow_input_id, old, &dag).await?),
            None => None,
        };
        let max_lines = self.settings.engine.max_log_lines;
        let mut picture = FlowPicture::new_ready(0, &dag, max_lines);
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
        }
        let (flow, output) = repo::create_flow(&self.db, flow_input_id, picture).await?;
        if let Some(reuse) = reuse {
            // The checkpoints become the new flow's own (hard links: no bytes copied), before
            // the supervisor looks for them. One that cannot be taken over is recomputed.
            let (from, to) = (self.engine.work_dir(reuse.from), self.engine.work_dir(flow.id));
            let linked = tokio::task::spawn_blocking(move || {
                reuse
                    .checkpoints
                    .iter()
                    .filter_map(|node| {
                        checkpoint::link(&from, &to, node)
                            .err()
                            .map(|e| (node.clone(), e))
                    })
                    .map(|(node, e)| format!("{node}: {e}"))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| AppError::internal("linking checkpoints", e))?;
            for failure in linked {
                tracing::warn!(flow_id = flow.id, failure = %failure, "a retry could not take over a checkpoint; it is recomputed");
            }
        }
        let output = repo::picture_from_model(output, max_lines)?;
        self.supervisor.do_send(StartFlow { flow_id: flow.id });
        tracing::info!(flow_id = flow.id, retry_of, "flow created");
        Ok(FlowRecord { flow, output })
    }

    /// What a retry of flow `old` (for input `flow_input_id`, planned as `dag`) can reuse:
    /// 422 when `old` does not exist or kept nothing, 409 when it is not of that input or did
    /// not end FAILED or CANCELLED.
    async fn reusable(&self, flow_input_id: i64, old: i64, dag: &Dag) -> Result<Reuse, AppError> {
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
        // applies) and the node it holds is a materialized node of this input's plan.
        let run = RunPlan::new(dag);
        let work_dir = self.engine.work_dir(old);
        let units = run.clone();
        let kept: HashSet<String> = tokio::task::spawn_blocking(move || {
            units
                .units
                .iter()
                .filter(|u| u.kind == UnitKind::Materialize && checkpoint::is_valid(&work_dir, &u.name))
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
        let done = run.done_nodes(|u| kept.contains(&u.name));
        let in_order = |names: &HashSet<String>| -> Vec<String> {
            dag.order.iter().filter(|n| names.contains(*n)).cloned().collect()
        };
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
            checkpoints: in_order(&kept),
            nodes,
        })
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
