//! `AppError` as RFC 9457 problem+json, mapped once for the whole API.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::{AppError, FieldError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

fn type_uri(slug: &str) -> String {
    format!("https://sluice.dev/problems/{slug}")
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: String, errors: Vec<FieldError>) -> Self {
        Problem {
            problem_type: type_uri(slug),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }

    pub fn response(&self) -> HttpResponse {
        HttpResponse::build(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type(PROBLEM_JSON)
            .json(self)
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Invalid(_) | AppError::StoreCheck(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let problem = match self {
            AppError::BadRequest { detail, errors } => Problem::new(
                status,
                "bad-request",
                "Malformed request",
                detail.clone(),
                errors.clone(),
            ),
            AppError::Invalid(errors) => Problem::new(
                status,
                "invalid",
                "Invalid request",
                format!("{} problem(s) found; see errors", errors.len()),
                errors.clone(),
            ),
            AppError::NotFound { .. } => {
                Problem::new(status, "not-found", "Not found", self.to_string(), vec![])
            }
            AppError::Conflict(detail) => {
                Problem::new(status, "conflict", "Conflict", detail.clone(), vec![])
            }
            AppError::MethodNotAllowed { .. } => Problem::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                self.to_string(),
                vec![],
            ),
            AppError::Unauthorized(detail) => {
                Problem::new(status, "unauthorized", "Unauthorized", detail.clone(), vec![])
            }
            AppError::PayloadTooLarge { .. } => Problem::new(
                status,
                "too-large",
                "Request body too large",
                self.to_string(),
                vec![],
            ),
            AppError::StoreCheck(detail) => Problem::new(
                status,
                "store-unreachable",
                "The data store cannot be used",
                detail.clone(),
                vec![FieldError::new("connection", detail.clone())],
            ),
            AppError::Unavailable(detail) => {
                Problem::new(status, "unavailable", "Not ready", detail.clone(), vec![])
            }
            AppError::Internal { message, .. } => {
                // The cause goes to the service log (already redacted); the client gets no
                // internals.
                tracing::error!(error = %message, "internal error");
                Problem::new(
                    status,
                    "internal",
                    "Internal error",
                    "an internal error occurred; it has been logged".into(),
                    vec![],
                )
            }
        };
        let mut response = problem.response();
        match self {
            AppError::Unauthorized(_) => {
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static("Bearer"),
                );
            }
            AppError::MethodNotAllowed { allow, .. } => {
                if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
                    response
                        .headers_mut()
                        .insert(actix_web::http::header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}
