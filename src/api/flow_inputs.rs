use actix_web::{web, HttpResponse};

use serde::Deserialize;

use super::dto::{FlowInputSummary, FlowInputView, List, PlannedFlowInputView};
use super::extract::{Json, Query};
use super::{Paging, BASE};
use crate::domain::spec::FlowInputRequest;
use crate::domain::time;
use crate::error::AppError;
use crate::services::Services;

/// `POST /flow-inputs?dry_run=true`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// `true`: validate and plan exactly like a create and answer 200 with the input as it
    /// would be stored (without an id); nothing is stored.
    pub dry_run: Option<bool>,
}

#[utoipa::path(
    post, path = "/api/v1.0/flow-inputs", operation_id = "create_flow_input", tag = "flow-inputs",
    request_body = FlowInputRequest,
    params(CreateParams),
    responses(
        (status = 201, description = "Created, with defaults filled in and the planned DAG", body = FlowInputView,
            headers(("Location" = String, description = "The new flow input's URL"))),
        (status = 200, description = "`dry_run=true`: valid; the input as it would be stored (with its DAG, without an id). Nothing was stored", body = PlannedFlowInputView),
    )
)]
pub async fn create(
    services: web::Data<Services>,
    params: Query<CreateParams>,
    body: Json<FlowInputRequest>,
) -> Result<HttpResponse, AppError> {
    if params.dry_run == Some(true) {
        let (spec, dag) = services.plan_flow_input(body.0).await?;
        return Ok(HttpResponse::Ok().json(PlannedFlowInputView::new(spec, dag, time::now())));
    }
    let view = FlowInputView::from(services.create_flow_input(body.0).await?);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{BASE}/flow-inputs/{}", view.id)))
        .json(view))
}

#[utoipa::path(
    get, path = "/api/v1.0/flow-inputs/{id}", operation_id = "get_flow_input", tag = "flow-inputs",
    params(("id" = i64, Path, minimum = 1, description = "Flow input id")),
    responses((status = 200, description = "The flow input", body = FlowInputView))
)]
pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.get_flow_input(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(FlowInputView::from(record)))
}

#[utoipa::path(
    get, path = "/api/v1.0/flow-inputs", operation_id = "list_flow_inputs", tag = "flow-inputs",
    params(Paging),
    responses((status = 200, description = "Newest first; summaries without SQL", body = super::openapi::FlowInputList))
)]
pub async fn list(services: web::Data<Services>, paging: Query<Paging>) -> Result<HttpResponse, AppError> {
    let page = services
        .list_flow_inputs(paging.limit()?, paging.before_id)
        .await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, FlowInputSummary::from)))
}
