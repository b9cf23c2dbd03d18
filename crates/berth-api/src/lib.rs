//! berth-api: the Docker Engine API's JSON types and helpers shared by the
//! daemon and the CLI: error bodies, the JSON progress-message stream,
//! filters, query booleans, and the response models of the endpoints berth
//! serves.
//!
//! The models are written by hand against the Engine API reference for the
//! version berth reports ([`API_VERSION`]), in dockerd's field order, because
//! the generated models on crates.io track a newer API (1.53) whose shapes
//! (image config, `/system/df`) differ from what docker CLI 28 expects.
//! Wire schemas are append-only: never rename or repurpose a field.
//!
//! Owns: types and pure parsing. Must not: do I/O.
#![forbid(unsafe_code)]

mod models;
mod time;

use std::collections::HashMap;

use berth_format::human_size_with_precision;
pub use models::*;
use serde::{Deserialize, Serialize};
pub use time::{parse_go_duration, parse_timestamp};

/// The API version berth implements and reports.
pub const API_VERSION: &str = "1.47";
/// The oldest API version clients may negotiate.
pub const MIN_API_VERSION: &str = "1.24";

/// `{"message": "..."}`, the body of every API error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// One message of Docker's JSON progress stream (pull, push, load, import, build).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JsonMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub message: String,
}

impl JsonMessage {
    pub fn stream(s: impl Into<String>) -> Self {
        JsonMessage {
            stream: Some(s.into()),
            ..Default::default()
        }
    }
    pub fn status(s: impl Into<String>) -> Self {
        JsonMessage {
            status: Some(s.into()),
            ..Default::default()
        }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        let m = msg.into();
        JsonMessage {
            error_detail: Some(ErrorDetail {
                code: None,
                message: m.clone(),
            }),
            error: Some(m),
            ..Default::default()
        }
    }
}

/// Docker's progress bar text: `[=====>     ]  1.2MB/3.4MB`.
pub fn progress_bar(current: u64, total: u64) -> String {
    let width = 50;
    let filled = if total == 0 {
        width
    } else {
        ((current as f64 / total as f64) * width as f64) as usize
    }
    .min(width);
    let bar = if filled == width {
        "=".repeat(width)
    } else {
        format!("{}>{}", "=".repeat(filled), " ".repeat(width - filled - 1))
    };
    format!(
        "[{bar}] {:>8}/{}",
        human_size_with_precision(current as f64, 4),
        human_size_with_precision(total as f64, 4)
    )
}

/// Parse the `filters` query parameter: `{"k":["v"]}` or the legacy
/// `{"k":{"v":true}}` form.
pub fn parse_filters(s: &str) -> Result<HashMap<String, Vec<String>>, String> {
    if s.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let v: serde_json::Value =
        serde_json::from_str(s).map_err(|e| format!("invalid filter: {e}"))?;
    let obj = v.as_object().ok_or("invalid filter: not an object")?;
    let mut out = HashMap::new();
    for (k, v) in obj {
        let vals = match v {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<Vec<_>>>(),
            serde_json::Value::Object(m) => Some(
                m.iter()
                    .filter(|(_, b)| b.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
            ),
            _ => None,
        }
        .ok_or_else(|| format!("invalid filter: {k}"))?;
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

/// Docker's query booleans: `1`, `true`, `True` (anything but "", "0", "false", "no" is true).
pub fn query_bool(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(s) => !matches!(s.to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_both_forms() {
        let a = parse_filters(r#"{"dangling":["true"],"label":["a=b"]}"#).unwrap();
        assert_eq!(a["dangling"], vec!["true"]);
        let b = parse_filters(r#"{"dangling":{"true":true}}"#).unwrap();
        assert_eq!(b["dangling"], vec!["true"]);
        assert!(parse_filters("{").is_err());
        assert!(parse_filters("[]").is_err());
    }
}
