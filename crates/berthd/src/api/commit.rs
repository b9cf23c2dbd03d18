//! `GET /containers/{id}/changes` (`docker diff`) and `POST /commit`
//! (`docker commit`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_containers::CommitOptions;
use berth_types::{Error, Reference};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Query, blocking};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/{id}/changes", get(changes))
        .route("/commit", post(commit))
}

async fn changes(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let c = st.containers.clone();
    let list = blocking(move || c.changes(&id)).await?;
    // dockerd's list is a Go slice that stays nil when nothing changed.
    if list.is_empty() {
        return Ok(axum::Json(Value::Null).into_response());
    }
    let body: Vec<Value> = list
        .iter()
        .map(|c| json!({"Path": c.path, "Kind": c.kind as u8}))
        .collect();
    Ok(axum::Json(body).into_response())
}

/// Docker's `RepoTagReference`: `repo` and `tag` as one `name:tag`, or
/// nothing when `repo` is empty.
fn repo_tag(repo: &str, tag: &str) -> Result<Option<String>, Error> {
    if repo.is_empty() {
        return Ok(None);
    }
    let rf = Reference::parse(repo)?;
    if rf.digest.is_some() {
        return Err(Error::invalid("cannot commit to digest reference"));
    }
    let full = if tag.is_empty() {
        rf.with_default_tag().to_string()
    } else {
        let r = Reference::parse(&format!("{}:{tag}", rf.name))?;
        r.to_string()
    };
    Ok(Some(full))
}

async fn commit(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    // A body is a container config; the CLI sends none (or `null`).
    let config = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError(Error::invalid(format!("invalid JSON: {e}"))))?
        {
            Value::Null => None,
            v @ Value::Object(_) => Some(v),
            _ => {
                return Err(ApiError(Error::invalid(
                    "invalid JSON: the body must be a container config object",
                )));
            }
        }
    };
    let repo_tag = repo_tag(q.get("repo").unwrap_or(""), q.get("tag").unwrap_or(""))?;
    // Before API 1.13 pause defaulted to false; every client berth serves
    // is newer, so an absent `pause` means true.
    let pause = match q.get("pause") {
        None | Some("") => true,
        Some(v) => berth_api::query_bool(Some(v)),
    };
    let opts = CommitOptions {
        repo_tag: repo_tag.clone(),
        comment: q.get("comment").unwrap_or("").to_string(),
        author: q.get("author").unwrap_or("").to_string(),
        pause,
        changes: q.all("changes"),
        config,
    };
    let container = q.get("container").unwrap_or("").to_string();
    let id = st.containers.commit(&container, opts).await?;
    if let Some(full) = &repo_tag {
        let name = berth_images::familiar(full);
        st.events.publish(
            "image",
            "tag",
            &id.to_string(),
            [("name".to_string(), name)].into_iter().collect(),
        );
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": id.to_string()})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::repo_tag;

    #[test]
    fn repo_and_tag_like_docker() {
        assert_eq!(repo_tag("", "x").unwrap(), None);
        assert_eq!(
            repo_tag("app", "").unwrap().as_deref(),
            Some("docker.io/library/app:latest")
        );
        assert_eq!(
            repo_tag("localhost:5000/app", "v1").unwrap().as_deref(),
            Some("localhost:5000/app:v1")
        );
        assert!(repo_tag("Bad", "").is_err());
        assert!(repo_tag("app", "bad tag").is_err());
        assert!(
            repo_tag(
                "app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ""
            )
            .is_err()
        );
    }
}
