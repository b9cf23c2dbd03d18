//! berth's own endpoints, under `/berth/` so they never collide with the
//! Docker Engine API: `GET /berth/system/check` lists what nothing in the
//! data root owns, `POST /berth/system/check` removes it (see
//! `housekeeping.rs` for what counts as owned).

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::{ApiResult, AppState, blocking};
use crate::housekeeping::{self, Report};

pub fn routes() -> Router<AppState> {
    Router::new().route("/berth/system/check", get(check).post(repair))
}

async fn check(State(st): State<AppState>) -> ApiResult<axum::Json<Report>> {
    let s = st.stores.clone();
    Ok(axum::Json(blocking(move || housekeeping::check(&s)).await?))
}

async fn repair(State(st): State<AppState>) -> ApiResult<axum::Json<Report>> {
    let s = st.stores.clone();
    Ok(axum::Json(
        blocking(move || housekeeping::repair(&s)).await?,
    ))
}
