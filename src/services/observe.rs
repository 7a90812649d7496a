//! What operators watch: readiness, and the metrics exposition (with flows by state as
//! `GET /flows/{id}` would show them: the Persister's live state where it holds one, else the
//! stored one).

use super::flows::FlowRecord;
use super::Services;
use crate::actors::messages::{GetLive, LiveStates};
use crate::error::AppError;
use crate::repo;

impl Services {
    /// Ready when the metadata database answers; 503 when it does not.
    pub async fn ping(&self) -> Result<(), AppError> {
        repo::ping(&self.db)
            .await
            .map_err(|_| AppError::Unavailable("the metadata database does not answer".into()))
    }

    /// Every metric in Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String, AppError> {
        let live = self.persister.send(LiveStates).await.unwrap_or_default();
        let ids: Vec<i64> = live.iter().map(|(id, _)| *id).collect();
        let mut counts = repo::count_flows_by_state(&self.db, &ids).await?;
        for (_, state) in live {
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        self.metrics.set_flow_counts(&counts);
        Ok(self.metrics.render())
    }
}

impl Services {
    /// Whether other instances may run flows (PostgreSQL metadata): a flow this instance does
    /// not hold may be moving all the same, and its followers here read it from the database.
    pub fn flows_run_elsewhere(&self) -> bool {
        self.leases.is_some()
    }

    /// How often a follower re-reads a flow run by another instance: as often as the owner
    /// writes it (`persist_interval_ms`), within 0.1–1 s.
    pub fn remote_poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.engine.persist_interval_ms.clamp(100, 1000))
    }

    /// A flow as `get_flow` reads it, for a live follower: with the number of the last update
    /// the picture already shows when it is the Persister's live picture (`None` when read
    /// from the database).
    pub async fn flow_snapshot(&self, id: i64) -> Result<(FlowRecord, Option<u64>), AppError> {
        let (flow, output) = repo::get_flow(&self.db, id)
            .await?
            .ok_or_else(|| AppError::not_found("flow", id))?;
        let live = self.persister.send(GetLive { flow_id: id }).await.ok().flatten();
        Ok(match live {
            Some((picture, seq)) => (
                FlowRecord {
                    flow,
                    output: picture,
                },
                Some(seq),
            ),
            None => (
                FlowRecord {
                    flow,
                    output: repo::picture_from_model(output, self.settings.engine.max_log_lines)?,
                },
                None,
            ),
        })
    }
}
