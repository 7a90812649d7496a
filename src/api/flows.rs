use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::dto::{FlowSummary, FlowView, List};
use super::extract::{Json, Query};
use super::{Paging, BASE, DEFAULT_LIMIT};
use crate::domain::flow::FlowState;
use crate::error::{AppError, FieldError};
use crate::services::Services;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFlow {
    pub flow_input_id: i64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    /// Only flows in this state: READY, RUNNING, CANCELLED, FAILED or COMPLETED.
    pub state: Option<String>,
    /// Items per page: 1 to 500 (default 50).
    pub limit: Option<u64>,
    /// Only flows with a smaller id (the previous page's `next_before_id`).
    pub before_id: Option<i64>,
}

#[utoipa::path(
    post, path = "/api/v1.0/flows", tag = "flows",
    request_body = NewFlow,
    responses((status = 202, description = "Created READY; runs in the background", body = FlowView,
        headers(("Location" = String, description = "The new flow's URL")))),
    security(("bearer" = []))
)]
pub async fn create(services: web::Data<Services>, body: Json<NewFlow>) -> Result<HttpResponse, AppError> {
    let record = services.create_flow(body.0.flow_input_id).await?;
    let view = FlowView::from(record);
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("{BASE}/flows/{}", view.id)))
        .json(view))
}

#[utoipa::path(
    get, path = "/api/v1.0/flows/{id}", tag = "flows",
    params(("id" = i64, Path, description = "Flow id")),
    responses((status = 200, description = "The flow with its live output", body = FlowView)),
    security(("bearer" = []))
)]
pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.get_flow(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(FlowView::from(record)))
}

#[utoipa::path(
    get, path = "/api/v1.0/flows", tag = "flows",
    params(FlowQuery),
    responses((status = 200, description = "Newest first; summaries without logs", body = super::openapi::FlowList)),
    security(("bearer" = []))
)]
pub async fn list(services: web::Data<Services>, query: Query<FlowQuery>) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    // Every problem of the query is reported, not just the first.
    let mut errors = Vec::new();
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let state = FlowState::parse(&s.to_ascii_uppercase());
            if state.is_none() {
                errors.push(FieldError::new(
                    "state",
                    format!("unknown state {s:?}: use READY, RUNNING, CANCELLED, FAILED or COMPLETED"),
                ));
            }
            state
        }
    };
    let paging = Paging {
        limit: q.limit,
        before_id: q.before_id,
    };
    let limit = match paging.limit() {
        Ok(limit) => limit,
        Err(AppError::Invalid(more)) => {
            errors.extend(more);
            DEFAULT_LIMIT
        }
        Err(other) => return Err(other),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let page = services.list_flows(state, limit, paging.before_id).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, |r| Ok(FlowSummary::from(r)))?))
}

#[utoipa::path(
    post, path = "/api/v1.0/flows/cancel/{id}", tag = "flows",
    params(("id" = i64, Path, description = "Flow id")),
    responses(
        (status = 202, description = "Cancel sent (a READY flow is CANCELLED at once)", body = FlowView),
        (status = 409, description = "The flow has already ended", body = super::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.cancel_flow(id.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(FlowView::from(record)))
}
