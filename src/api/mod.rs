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
pub mod schema_rules;

use actix_web::{web, HttpRequest, HttpResponse, Resource, Route};
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
            let open = vec![$((stringify!($om), $op, web::$om().to($oh)),)*];
            let api = vec![$((stringify!($am), $ap, web::$am().to($ah)),)*];
            cfg.app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .app_data(web::PathConfig::default().error_handler(extract::path_error));
            for resource in resources(open) {
                cfg.service(resource);
            }
            let scope = resources(api).into_iter().fold(
                web::scope(BASE).wrap(actix_web::middleware::from_fn(auth::require_token)),
                |scope, resource| scope.service(resource),
            );
            cfg.service(scope.default_service(web::to(not_found)))
                .default_service(web::to(not_found));
        }
    };
}

/// One resource per path, holding every method's route, so that a method the path does not
/// serve is answered by that resource: 405 with `Allow`, not "no such route". (A route mounted
/// on its own carries its method guard up to a resource of its own, and a request whose method
/// no resource accepts falls through to the 404 of unknown paths.)
fn resources(routes: Vec<(&'static str, &'static str, Route)>) -> Vec<Resource> {
    let mut by_path: Vec<(&'static str, Vec<&'static str>, Vec<Route>)> = Vec::new();
    for (method, path, route) in routes {
        match by_path.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, methods, routes)) => {
                methods.push(method);
                routes.push(route);
            }
            None => by_path.push((path, vec![method], vec![route])),
        }
    }
    by_path
        .into_iter()
        .map(|(path, methods, routes)| {
            let allow = methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(", ");
            routes
                .into_iter()
                .fold(web::resource(path), Resource::route)
                .default_service(web::to(move |req: HttpRequest| {
                    let allow = allow.clone();
                    async move { method_not_allowed(req, allow) }
                }))
        })
        .collect()
}

fn method_not_allowed(req: HttpRequest, allow: String) -> Result<HttpResponse, AppError> {
    Err(AppError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_string(),
        allow,
    })
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
    #[param(minimum = 1, maximum = 500)]
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
