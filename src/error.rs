//! The one error type at the service boundary. Its variants separate the caller's mistakes
//! (4xx) from broken invariants (5xx); `api::problem` maps it to problem+json once.

use serde::Serialize;

/// One problem found in a request, located by a JSON path such as `transforms[2].sql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed JSON or wrong field types (400).
    #[error("{detail}")]
    BadRequest { detail: String, errors: Vec<FieldError> },
    /// Well-formed but invalid (422); lists every problem found.
    #[error("the request is invalid: {} problem(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// Unknown id (404).
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    /// The resource's state does not allow this (409).
    #[error("{0}")]
    Conflict(String),
    /// A known path asked with a method it does not serve (405); `allow` lists the methods it
    /// does serve, as the `Allow` header says them (`GET, POST`).
    #[error("{method} is not allowed on {path}: use {allow}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    /// Missing or wrong token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Body larger than the configured limit (413).
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A data store cannot be reached or used (422 on `/check`); the reason, never a password.
    #[error("{0}")]
    StoreCheck(String),
    /// A dependency is not ready (503).
    #[error("{0}")]
    Unavailable(String),
    /// A broken invariant or an infrastructure failure (500). The text goes to the service log,
    /// never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a flow's own lines (public: anyone who may read the flow sees them) say about an
/// internal error: not its text, which goes to the service log with the flow id, but where to
/// look.
pub fn internal_error_for_flow(flow_id: i64) -> String {
    format!("an internal error occurred (see the service log, flow {flow_id})")
}

impl AppError {
    /// This error as flow `flow_id`'s lines may show it: an internal one only points to the
    /// service log (the caller logs it there).
    pub fn for_flow(&self, flow_id: i64) -> String {
        match self {
            AppError::Internal(_) => internal_error_for_flow(flow_id),
            other => other.to_string(),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        AppError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid(vec![FieldError::new(path, message)])
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        AppError::Internal(format!("{context}: {error}"))
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        AppError::Internal(crate::secrets::redact_urls(&format!("metadata database: {err}")))
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}
