//! The one error type at the service boundary. Its variants separate the caller's mistakes
//! (4xx) from broken invariants (5xx); `api::problem` maps it to problem+json once. Only api
//! and services use it: below them, the data layer fails with `repo::RepoError` and the
//! supervisor's loading with `actors::errors::LoadError`.

pub use crate::domain::field_error::FieldError;

/// The source of an internal error, kept for whoever walks the chain (the text is in the
/// message already).
pub type InternalSource = Box<dyn std::error::Error + Send + Sync>;

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
    /// A broken invariant or an infrastructure failure (500). The message goes to the service
    /// log, never to the client; `source` is the error it came from, where there is one.
    #[error("internal error: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<InternalSource>,
    },
}

impl AppError {
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        AppError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid(vec![FieldError::new(path, message)])
    }

    /// An internal error caused by `error`, which is kept as the source.
    pub fn internal(context: &str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal {
            message: format!("{context}: {error}"),
            source: Some(Box::new(error)),
        }
    }

    /// An internal error with no error behind it (a broken invariant, or a cause that is only
    /// text).
    pub fn internal_text(message: impl Into<String>) -> Self {
        AppError::Internal {
            message: message.into(),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_source() {
        let cause = std::io::Error::other("disk full");
        let err = AppError::internal("writing checkpoints", cause);
        assert_eq!(err.to_string(), "internal error: writing checkpoints: disk full");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk full"));
        assert!(std::error::Error::source(&AppError::internal_text("no output row")).is_none());
    }
}
