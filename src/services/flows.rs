//! Flows: create (READY, then handed to the supervisor), read (live from the Persister while
//! running), list, cancel.

use entity::flow;

use super::repo::{self, Page};
use super::Services;
use crate::actors::messages::{CancelFlow, CancelOutcome, GetPicture, StartFlow};
use crate::domain::flow::{FlowPicture, FlowState};
use crate::error::AppError;

/// A flow and its output.
pub struct FlowRecord {
    pub flow: flow::Model,
    pub output: FlowPicture,
}

impl Services {
    #[tracing::instrument(skip(self))]
    pub async fn create_flow(&self, flow_input_id: i64, full_refresh: bool) -> Result<FlowRecord, AppError> {
        let input = repo::get_flow_input(&self.db, flow_input_id)
            .await?
            .ok_or_else(|| {
                AppError::invalid(
                    "flow_input_id",
                    format!("flow input {flow_input_id} does not exist"),
                )
            })?;
        let (spec, dag) = repo::flow_input_spec(&input)?;
        let (flow, output) = repo::create_flow(
            &self.db,
            flow_input_id,
            &dag,
            &spec.checks,
            self.settings.engine.max_log_lines,
            full_refresh,
        )
        .await?;
        let output = repo::picture_from_model(output, self.settings.engine.max_log_lines)?;
        self.supervisor.do_send(StartFlow {
            flow_id: flow.id,
            exclusive_input: spec.is_incremental().then_some(flow_input_id),
        });
        tracing::info!(flow_id = flow.id, "flow created");
        Ok(FlowRecord { flow, output })
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
