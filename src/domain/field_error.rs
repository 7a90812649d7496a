//! `FieldError`: one problem found in a request, located by a JSON path. Validation returns
//! them; the service boundary (`error::AppError::Invalid`) carries them to the client.

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
