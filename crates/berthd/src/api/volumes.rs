//! Volume endpoints: list, create, inspect, remove, prune (and update,
//! which dockerd only serves for swarm cluster volumes).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_types::{Error, ErrorKind};
use berth_volumes::VolumeService;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Query, blocking};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove).put(update))
}

/// Volume name → the containers whose records name it.
fn users(st: &AppState) -> impl Fn() -> berth_types::Result<BTreeMap<String, Vec<String>>> + use<> {
    let c = st.containers.clone();
    move || c.volume_users()
}

fn svc(st: &AppState) -> Arc<VolumeService> {
    st.volumes.clone()
}

async fn list(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let (v, users) = (svc(&st), users(&st));
    let vols = blocking(move || v.list(&filters, &users)).await?;
    let list: Vec<Value> = vols.iter().map(|v| v.json()).collect();
    Ok(axum::Json(json!({"Volumes": list, "Warnings": null})).into_response())
}

/// Docker's `volume.CreateOptions`.
fn string_map(v: &Value, field: &str) -> ApiResult<Option<BTreeMap<String, String>>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError(Error::invalid(format!(
                    "json: cannot unmarshal {} into Go struct field CreateOptions.{field} of type string",
                    json_kind(v)
                )))),
            })
            .collect::<ApiResult<_>>()
            .map(Some),
        other => Err(ApiError(Error::invalid(format!(
            "json: cannot unmarshal {} into Go struct field CreateOptions.{field} of type map[string]string",
            json_kind(other)
        )))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

async fn create(State(st): State<AppState>, body: Bytes) -> ApiResult<Response> {
    // An empty body is a request with no fields (dockerd's ReadJSON).
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(Error::invalid(format!("invalid JSON: {e}"))))?
    };
    if !req.is_object() {
        return Err(ApiError(Error::invalid(format!(
            "invalid JSON: json: cannot unmarshal {} into Go value of type volume.CreateOptions",
            json_kind(&req)
        ))));
    }
    if !req["ClusterVolumeSpec"].is_null() {
        return Err(ApiError(Error::new(
            ErrorKind::Unavailable,
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
        )));
    }
    let name = req["Name"].as_str().unwrap_or("").to_string();
    let driver = req["Driver"].as_str().unwrap_or("").to_string();
    let options = string_map(&req["DriverOpts"], "DriverOpts")?;
    let labels = string_map(&req["Labels"], "Labels")?;
    let v = svc(&st);
    let vol = blocking(move || {
        v.create(
            Some(name.as_str()).filter(|n| !n.is_empty()),
            &driver,
            options,
            labels,
            None,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(vol.json())).into_response())
}

async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let v = svc(&st);
    let vol = blocking(move || v.get(&name)).await?;
    Ok(axum::Json(vol.json()).into_response())
}

async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let force = q.bool("force");
    let (v, users) = (svc(&st), users(&st));
    blocking(move || v.remove(&name, force, &users)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn prune(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let (v, users) = (svc(&st), users(&st));
    let report = blocking(move || v.prune(&filters, &users)).await?;
    Ok(axum::Json(json!({
        "VolumesDeleted": if report.deleted.is_empty() { Value::Null } else { json!(report.deleted) },
        "SpaceReclaimed": report.reclaimed,
    }))
    .into_response())
}

async fn update() -> ApiError {
    ApiError(Error::new(
        ErrorKind::Unavailable,
        "volume update only valid for cluster volumes, but swarm is unavailable",
    ))
}

/// `Volumes` of `/system/df`: local volumes without driver options, with
/// `UsageData`.
pub async fn disk_usage(st: &AppState) -> ApiResult<Vec<Value>> {
    let (v, users) = (svc(st), users(st));
    let usage = blocking(move || v.usage(&users)).await?;
    Ok(usage
        .into_iter()
        .map(|u| {
            let mut j = u.volume.json();
            j["UsageData"] = json!({"RefCount": u.ref_count, "Size": u.size});
            j
        })
        .collect())
}
