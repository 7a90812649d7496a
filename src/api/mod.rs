//! The REST API (`/api/v1.0`) and service endpoints. Handlers are thin: parse, call one
//! service, map the result; every error is problem+json.

pub mod auth;
pub mod data_stores;
pub mod dto;
pub mod extract;
pub mod flow_inputs;
pub mod flows;
pub mod health;
pub mod problem;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::error::{AppError, FieldError};

pub const BASE: &str = "/api/v1.0";

/// Mounts every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(extract::query_error))
        .app_data(web::PathConfig::default().error_handler(extract::path_error))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope(BASE)
                .wrap(actix_web::middleware::from_fn(auth::require_token))
                .route("/data-stores", web::post().to(data_stores::create))
                .route("/data-stores", web::get().to(data_stores::list))
                .route("/data-stores/{id}", web::get().to(data_stores::get))
                .route("/flow-inputs", web::post().to(flow_inputs::create))
                .route("/flow-inputs", web::get().to(flow_inputs::list))
                .route("/flow-inputs/{id}", web::get().to(flow_inputs::get))
                .route("/flows", web::post().to(flows::create))
                .route("/flows", web::get().to(flows::list))
                .route("/flows/{id}", web::get().to(flows::get))
                .route("/flows/cancel/{id}", web::post().to(flows::cancel))
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound {
        what: "route",
        id: format!("{} {}", req.method(), req.path()),
    })
}

/// `?limit=&before_id=` keyset paging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    pub limit: Option<u64>,
    pub before_id: Option<i64>,
}

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 500;

impl Paging {
    pub fn limit(&self) -> Result<u64, AppError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(AppError::Invalid(vec![FieldError::new(
                "limit",
                format!("{n} is out of range: use 1 to {MAX_LIMIT}"),
            )])),
        }
    }
}
