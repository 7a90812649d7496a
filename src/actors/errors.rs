//! `LoadError`: why the supervisor could not load a flow to start it. Its text goes to the
//! service log; [`LoadError::for_flow`] is what the flow's own (public) lines show.

use crate::domain::flow::internal_error_for_flow;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The flow itself is gone.
    #[error("flow {0} does not exist")]
    FlowMissing(i64),
    /// The flow's input is gone (a broken invariant: inputs are never deleted).
    #[error("flow input {0} is missing")]
    InputMissing(i64),
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Blocking work (reading the work directory) crashed.
    #[error("{what}: {source}")]
    Crashed {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl LoadError {
    /// Blocking work on `what` that crashed.
    pub fn crashed(what: impl Into<String>, source: tokio::task::JoinError) -> Self {
        LoadError::Crashed {
            what: what.into(),
            source,
        }
    }

    /// The metadata database was out of reach: the flow is not at fault, and loading it again
    /// later may work.
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Repo(e) if e.is_unavailable())
    }

    /// This error as the flow's lines may show it: a missing flow says so; anything internal
    /// only points to the service log (the caller logs it there).
    pub fn for_flow(&self, flow_id: i64) -> String {
        match self {
            LoadError::FlowMissing(_) => self.to_string(),
            _ => internal_error_for_flow(flow_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_flow_is_told_to_the_flow() {
        assert_eq!(LoadError::FlowMissing(4).for_flow(4), "flow 4 does not exist");
        let internal = LoadError::InputMissing(9);
        assert_eq!(internal.to_string(), "flow input 9 is missing");
        assert_eq!(
            internal.for_flow(4),
            "an internal error occurred (see the service log, flow 4)"
        );
        let repo = LoadError::from(RepoError::Corrupt("output 3 has unknown state NAP".into()));
        assert_eq!(repo.to_string(), "output 3 has unknown state NAP");
        assert_eq!(repo.for_flow(4), internal_error_for_flow(4));
        assert!(!repo.is_transient());
        let unreachable = LoadError::from(RepoError::Sql(sqlx::Error::PoolTimedOut));
        assert!(unreachable.is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let lost = sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::Io(io),
        )));
        assert!(LoadError::from(RepoError::from(lost)).is_transient());
    }
}
