//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use crate::error::AppError;
use crate::services::Services;

#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "service",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok")
}

#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "service",
    responses(
        (status = 200, description = "The metadata database answers", body = String, content_type = "text/plain"),
        (status = 503, description = "The metadata database does not answer", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(services: web::Data<Services>) -> Result<HttpResponse, AppError> {
    services.ping().await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ready"))
}
