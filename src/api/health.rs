//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use crate::error::AppError;
use crate::services::{repo, Services};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok")
}

pub async fn readyz(services: web::Data<Services>) -> Result<HttpResponse, AppError> {
    match repo::ping(&services.db).await {
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready")),
        Err(_) => Err(AppError::Unavailable(
            "the metadata database does not answer".into(),
        )),
    }
}
