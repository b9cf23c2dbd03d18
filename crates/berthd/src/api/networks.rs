//! Network endpoints: list, inspect, create, remove, connect, disconnect,
//! prune.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_types::Error;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Query, blocking};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn body_json(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError(Error::invalid(format!("invalid JSON: {e}"))))
}

const FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

fn matches(
    rec: &Value,
    filters: &HashMap<String, Vec<String>>,
    in_use: &std::collections::HashSet<String>,
) -> ApiResult<bool> {
    for (k, vals) in filters {
        if !FILTERS.contains(&k.as_str()) {
            return Err(ApiError(Error::invalid(format!("invalid filter '{k}'"))));
        }
        if vals.is_empty() {
            continue;
        }
        let builtin = berth_network::PREDEFINED.contains(&rec["Name"].as_str().unwrap_or(""));
        let id = rec["Id"].as_str().unwrap_or("");
        let mut ok = false;
        for v in vals {
            ok |= match k.as_str() {
                "driver" => rec["Driver"].as_str() == Some(v.as_str()),
                "id" => id.starts_with(v.as_str()),
                "name" => rec["Name"].as_str().is_some_and(|n| n.contains(v.as_str())),
                "scope" => rec["Scope"].as_str() == Some(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => rec["Labels"][lk].as_str() == Some(lv),
                    None => rec["Labels"].get(v).is_some(),
                },
                "type" => match v.as_str() {
                    "custom" => !builtin,
                    "builtin" => builtin,
                    _ => {
                        return Err(ApiError(Error::invalid(format!(
                            "invalid filter: 'type'='{v}'"
                        ))));
                    }
                },
                "dangling" => {
                    let want = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError(Error::invalid(format!(
                                "invalid filter 'dangling={v}'"
                            ))));
                        }
                    };
                    (!builtin && !in_use.contains(id)) == want
                }
                _ => false,
            };
        }
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let in_use = st.networks.in_use();
    let mut out = Vec::new();
    for mut rec in st.networks.list()? {
        if matches(&rec, &filters, &in_use)? {
            rec["Containers"] = json!({});
            out.push(rec);
        }
    }
    Ok(axum::Json(out).into_response())
}

async fn inspect(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let c = st.containers.clone();
    let names = move |cid: &str| c.find(cid).ok().map(|r| r.name);
    let rec = st.networks.inspect(&id, &names)?;
    Ok(axum::Json(rec).into_response())
}

async fn create(State(st): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let n = st.networks.clone();
    let id = blocking(move || n.create(&body)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": id, "Warning": ""})),
    )
        .into_response())
}

async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let n = st.networks.clone();
    blocking(move || n.remove(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let container = body["Container"].as_str().unwrap_or("");
    st.networks.find(&id)?;
    st.containers
        .connect(container, &id, &body["EndpointConfig"])
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = body_json(&body)?;
    let container = body["Container"].as_str().unwrap_or("");
    st.containers.disconnect(container, &id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn prune(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let p = super::PruneFilters::parse(&filters, &["until", "label", "label!"])?;
    // Networks that a container (running or not) is configured for stay.
    let mut wanted = std::collections::HashSet::new();
    for c in st.containers.all()? {
        if let Some(m) = c["NetworkSettings"]["Networks"].as_object() {
            for e in m.values() {
                if let Some(n) = e["NetworkID"].as_str() {
                    wanted.insert(n.to_string());
                }
            }
        }
    }
    let in_use = st.networks.in_use();
    let mut deleted = Vec::new();
    for rec in st.networks.list()? {
        let name = rec["Name"].as_str().unwrap_or("").to_string();
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        if berth_network::PREDEFINED.contains(&name.as_str())
            || wanted.contains(&id)
            || in_use.contains(&id)
        {
            continue;
        }
        let created = rec["Created"]
            .as_str()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
        if !p.labels_match(&rec["Labels"]) || !p.keeps_age(created) {
            continue;
        }
        let n = st.networks.clone();
        let rid = id.clone();
        if blocking(move || n.remove(&rid)).await.is_ok() {
            deleted.push(name);
        }
    }
    st.events.publish(
        "network",
        "prune",
        "",
        std::collections::BTreeMap::from([("reclaimed".to_string(), "0".to_string())]),
    );
    let deleted = if deleted.is_empty() {
        serde_json::Value::Null
    } else {
        json!(deleted)
    };
    Ok(axum::Json(json!({"NetworksDeleted": deleted})).into_response())
}
