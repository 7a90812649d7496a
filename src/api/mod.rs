//! The REST API (`/api/v1.0`) and service endpoints. Handlers are thin: parse, call one
//! service, map the result; every error is problem+json.

pub mod auth;
pub mod dashboard;
pub mod data_stores;
pub mod dto;
pub mod events;
pub mod extract;
pub mod flow_inputs;
pub mod flows;
pub mod health;
pub mod observe;
pub mod openapi;
pub mod problem;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::error::{AppError, FieldError};

pub const BASE: &str = "/api/v1.0";

/// Declares every route once: `routes` mounts them and `ROUTES` lists them (the OpenAPI test
/// checks the document against this list, so a route cannot be added without documenting it).
macro_rules! route_table {
    (
        open { $($om:ident $op:literal => $oh:path),* $(,)? }
        api { $($am:ident $ap:literal => $ah:path),* $(,)? }
    ) => {
        /// Every route the server answers: (method, path pattern).
        pub const ROUTES: &[(&str, &str)] = &[
            $((stringify!($om), $op),)*
            $((stringify!($am), concat!("/api/v1.0", $ap)),)*
        ];

        /// Mounts every route.
        pub fn routes(cfg: &mut web::ServiceConfig) {
            cfg.app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .app_data(web::PathConfig::default().error_handler(extract::path_error))
                $(.route($op, web::$om().to($oh)))*
                .service(
                    web::scope(BASE)
                        .wrap(actix_web::middleware::from_fn(auth::require_token))
                        $(.route($ap, web::$am().to($ah)))*
                        .default_service(web::to(not_found)),
                )
                .default_service(web::to(not_found));
        }
    };
}

route_table! {
    open {
        get "/healthz" => health::healthz,
        get "/readyz" => health::readyz,
        get "/metrics" => observe::metrics,
        get "/" => dashboard::index,
        get "/assets/{file}" => dashboard::asset,
    }
    api {
        post "/data-stores" => data_stores::create,
        get "/data-stores" => data_stores::list,
        get "/data-stores/{id}" => data_stores::get,
        post "/data-stores/{id}/check" => data_stores::check,
        post "/flow-inputs" => flow_inputs::create,
        get "/flow-inputs" => flow_inputs::list,
        get "/flow-inputs/{id}" => flow_inputs::get,
        post "/flows" => flows::create,
        get "/flows" => flows::list,
        get "/flows/{id}" => flows::get,
        post "/flows/cancel/{id}" => flows::cancel,
        get "/flows/{id}/events" => events::events,
        get "/openapi.json" => openapi::document,
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound {
        what: "route",
        id: format!("{} {}", req.method(), req.path()),
    })
}

/// `?limit=&before_id=` keyset paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Items per page: 1 to 500 (default 50).
    pub limit: Option<u64>,
    /// Only items with a smaller id (the previous page's `next_before_id`).
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_route_table_uses_the_base_path() {
        assert!(super::ROUTES
            .iter()
            .any(|(m, p)| *m == "get" && *p == format!("{}/flows/{{id}}/events", super::BASE)));
    }
}
