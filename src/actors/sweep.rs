//! Sweeping the engine's work directories: which flows' directories are no longer needed (a
//! pure rule, `is_stale`) and removing them, with a crashed retry's leftover staging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::domain::flow::FlowState;
use crate::engine::Engine;
use crate::repo;

/// What the sweep knows of a flow that has a work directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirOwner {
    /// The flow's input.
    pub input: i64,
    pub state: FlowState,
    /// When it ended (when it was last updated, for a flow that has not).
    pub ended: DateTime<Utc>,
}

/// Whether flow `flow_id`'s work directory can go: its flow no longer exists (`owner` is
/// `None`) or COMPLETED; or it FAILED or was CANCELLED and either `retention` has passed since
/// it ended or `latest_completed`, the latest COMPLETED flow of its input, came after it.
/// A READY or RUNNING flow keeps its directory.
pub fn is_stale(
    flow_id: i64,
    owner: Option<&DirOwner>,
    latest_completed: Option<i64>,
    now: DateTime<Utc>,
    retention: chrono::Duration,
) -> bool {
    let Some(owner) = owner else {
        return true;
    };
    match owner.state {
        FlowState::Ready | FlowState::Running => false,
        FlowState::Completed => true,
        FlowState::Failed | FlowState::Cancelled => {
            now.signed_duration_since(owner.ended) >= retention
                || latest_completed.is_some_and(|completed| completed > flow_id)
        }
    }
}

/// Removes every work directory that no flow needs (see `is_stale`: a COMPLETED flow's,
/// normally gone already; one of a flow that no longer exists; a FAILED or CANCELLED flow's
/// kept checkpoints once `retention` has passed or a later flow of the same input has
/// COMPLETED, so a retry has nothing to gain over a plain flow), and a retry's staging
/// directory left by a crash. Best effort: what fails is logged and tried again at the next
/// sweep.
pub async fn sweep_work_dirs(db: DatabaseConnection, engine: Arc<Engine>, retention: Duration) {
    let leftovers = engine.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for dir in leftovers.stale_retry_staging(STALE_RETRY_STAGING) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a retry's leftover checkpoints");
            }
        }
    })
    .await;
    let lister = engine.clone();
    let ids = match tokio::task::spawn_blocking(move || lister.flows_with_work_dirs()).await {
        Ok(Ok(ids)) => ids,
        Ok(Err(e)) => return tracing::warn!(error = %e, "cannot list the work directories"),
        Err(e) => return tracing::warn!(error = %e, "cannot list the work directories"),
    };
    if ids.is_empty() {
        return;
    }
    let flows: HashMap<i64, DirOwner> = match repo::flows_by_ids(&db, &ids).await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(f, o)| {
                let owner = DirOwner {
                    input: f.flow_input_id,
                    state: FlowState::parse(&o.state)?,
                    ended: o.finished_utc.unwrap_or(o.updated_utc),
                };
                Some((f.id, owner))
            })
            .collect(),
        Err(e) => return tracing::warn!(error = %e, "cannot sweep the work directories"),
    };
    let mut inputs: Vec<i64> = flows.values().map(|o| o.input).collect();
    inputs.sort_unstable();
    inputs.dedup();
    let latest = match repo::latest_completed_flows(&db, &inputs).await {
        Ok(latest) => latest,
        Err(e) => return tracing::warn!(error = %e, "cannot sweep the work directories"),
    };
    let now = chrono::Utc::now();
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let stale: Vec<i64> = ids
        .into_iter()
        .filter(|id| {
            let owner = flows.get(id);
            let latest = owner.and_then(|o| latest.get(&o.input)).copied();
            is_stale(*id, owner, latest, now, retention)
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let remove = engine.clone();
    let removed = tokio::task::spawn_blocking(move || {
        for id in stale {
            let dir = remove.work_dir(id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::debug!(flow_id = id, "removed the work directory"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(flow_id = id, error = %e, "cannot remove the work directory"),
            }
        }
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "sweeping the work directories crashed");
    }
}

/// Age after which a retry's staging directory is a leftover (a retry moves it into place
/// within a request).
const STALE_RETRY_STAGING: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(state: FlowState, ended_hours_ago: i64) -> DirOwner {
        DirOwner {
            input: 7,
            state,
            ended: Utc::now() - chrono::Duration::hours(ended_hours_ago),
        }
    }

    fn stale(owner: Option<DirOwner>, latest_completed: Option<i64>) -> bool {
        is_stale(
            10,
            owner.as_ref(),
            latest_completed,
            Utc::now(),
            chrono::Duration::hours(24),
        )
    }

    #[test]
    fn a_directory_without_a_flow_or_of_a_completed_flow_goes() {
        assert!(stale(None, None));
        assert!(stale(Some(owner(FlowState::Completed, 0)), None));
    }

    #[test]
    fn ready_and_running_flows_keep_theirs_whatever_their_age() {
        for state in [FlowState::Ready, FlowState::Running] {
            assert!(!stale(Some(owner(state, 1000)), Some(11)), "{state}");
        }
    }

    #[test]
    fn a_failed_or_cancelled_flow_keeps_its_checkpoints_for_the_retention() {
        for state in [FlowState::Failed, FlowState::Cancelled] {
            assert!(
                !stale(Some(owner(state, 1)), None),
                "{state} within the retention"
            );
            assert!(stale(Some(owner(state, 25)), None), "{state} past the retention");
        }
    }

    #[test]
    fn a_later_completed_flow_of_the_input_ends_the_retention() {
        let failed = Some(owner(FlowState::Failed, 1));
        assert!(stale(failed, Some(11)), "a later flow completed");
        assert!(!stale(failed, Some(9)), "only an earlier one did");
    }
}
