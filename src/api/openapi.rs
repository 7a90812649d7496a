//! The OpenAPI 3 document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and the DTOs' `ToSchema` derives. The error responses every operation shares
//! (problem+json) are added here by rule, once, rather than repeated on each handler.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::dto::{DataStoreView, FlowInputSummary, FlowSummary};
use super::{
    dashboard, data_stores, events, flow_inputs, flows, health, observe, problem::PROBLEM_JSON, BASE,
};

/// `GET /data-stores`.
#[derive(Serialize, ToSchema)]
pub struct DataStoreList {
    pub items: Vec<DataStoreView>,
    pub next_before_id: Option<i64>,
}

/// `GET /flow-inputs`.
#[derive(Serialize, ToSchema)]
pub struct FlowInputList {
    pub items: Vec<FlowInputSummary>,
    pub next_before_id: Option<i64>,
}

/// `GET /flows`.
#[derive(Serialize, ToSchema)]
pub struct FlowList {
    pub items: Vec<FlowSummary>,
    pub next_before_id: Option<i64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Run data flows: ingest, transform with a SQL DAG, persist atomically, follow live. \
            Errors are application/problem+json (RFC 9457). When API tokens are configured every /api/v1.0 \
            request needs `Authorization: Bearer <token>`."
    ),
    paths(
        health::healthz,
        health::readyz,
        observe::metrics,
        dashboard::index,
        dashboard::asset,
        data_stores::create,
        data_stores::list,
        data_stores::get,
        data_stores::check,
        flow_inputs::create,
        flow_inputs::list,
        flow_inputs::get,
        flows::create,
        flows::list,
        flows::get,
        flows::cancel,
        events::events,
        document,
    ),
    components(schemas(
        crate::actors::events::StateUpdate,
        crate::actors::events::ProgressUpdate,
        crate::actors::events::TaskRows,
        crate::actors::events::LineUpdate,
    )),
    modifiers(&SharedResponses),
    tags(
        (name = "data-stores", description = "Where data is read from and written to"),
        (name = "flow-inputs", description = "Immutable pipeline descriptions"),
        (name = "flows", description = "Runs of flow inputs: start, follow, cancel"),
        (name = "service", description = "Health, metrics, this document and the dashboard"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme and the problem+json responses that follow from the kind of
/// operation: 401 and 500 under the API base, 400/413/422 where there is a body, 404 where
/// there is an id.
struct SharedResponses;

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components
            .schemas
            .entry("Problem".to_string())
            .or_insert_with(<super::problem::Problem as utoipa::PartialSchema>::schema);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let under_api = path.starts_with(BASE);
            let has_id = path.contains("{id}");
            for op in operations(item) {
                let has_body = op.request_body.is_some();
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description).into());
                };
                if has_body {
                    add("400", "Malformed JSON or a field of the wrong type");
                    add("413", "The body is larger than server.max_body_bytes");
                    add("422", "Well-formed but invalid; `errors` lists every problem");
                }
                if under_api {
                    add("401", "Missing or invalid bearer token");
                }
                if has_id {
                    add("404", "No such id");
                }
                if under_api || has_id {
                    add("500", "An internal error (logged; no details are returned)");
                }
            }
        }
    }
}

/// The OpenAPI document as JSON.
pub fn document_json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

#[utoipa::path(
    get, path = "/api/v1.0/openapi.json", tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)),
    security(("bearer" = []))
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}
