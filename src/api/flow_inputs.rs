use actix_web::{web, HttpResponse};

use super::dto::{FlowInputSummary, FlowInputView, List};
use super::extract::{Json, Query};
use super::{Paging, BASE};
use crate::domain::spec::FlowInputRequest;
use crate::error::AppError;
use crate::services::Services;

pub async fn create(
    services: web::Data<Services>,
    body: Json<FlowInputRequest>,
) -> Result<HttpResponse, AppError> {
    let model = services.create_flow_input(body.0).await?;
    let view = FlowInputView::from_model(model)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{BASE}/flow-inputs/{}", view.id)))
        .json(view))
}

pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let model = services.get_flow_input(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(FlowInputView::from_model(model)?))
}

pub async fn list(services: web::Data<Services>, paging: Query<Paging>) -> Result<HttpResponse, AppError> {
    let page = services
        .list_flow_inputs(paging.limit()?, paging.before_id)
        .await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, FlowInputSummary::from_model)?))
}
