//! Response models, field order as dockerd writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    #[serde(rename = "Platform")]
    pub platform: VersionPlatform,
    #[serde(rename = "Components")]
    pub components: Vec<VersionComponent>,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    #[serde(rename = "GitCommit")]
    pub git_commit: String,
    #[serde(rename = "GoVersion")]
    pub go_version: String,
    #[serde(rename = "Os")]
    pub os: String,
    #[serde(rename = "Arch")]
    pub arch: String,
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
    #[serde(rename = "BuildTime", default)]
    pub build_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionPlatform {
    #[serde(rename = "Name")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionComponent {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Details", default)]
    pub details: BTreeMap<String, String>,
}

/// An entry of `GET /images/json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    #[serde(rename = "Containers")]
    pub containers: i64,
    #[serde(rename = "Created")]
    pub created: i64,
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ParentId")]
    pub parent_id: String,
    #[serde(rename = "RepoDigests")]
    pub repo_digests: Vec<String>,
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "SharedSize")]
    pub shared_size: i64,
    #[serde(rename = "Size")]
    pub size: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "RepoDigests")]
    pub repo_digests: Vec<String>,
    #[serde(rename = "Parent")]
    pub parent: String,
    #[serde(rename = "Comment")]
    pub comment: String,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "DockerVersion")]
    pub docker_version: String,
    #[serde(rename = "Author")]
    pub author: String,
    #[serde(rename = "Config")]
    pub config: Value,
    #[serde(rename = "Architecture")]
    pub architecture: String,
    #[serde(rename = "Variant", skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    #[serde(rename = "Os")]
    pub os: String,
    #[serde(rename = "Size")]
    pub size: i64,
    #[serde(rename = "GraphDriver")]
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    #[serde(rename = "Metadata")]
    pub metadata: ImageMetadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphDriver {
    #[serde(rename = "Data")]
    pub data: Option<BTreeMap<String, String>>,
    #[serde(rename = "Name")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMetadata {
    #[serde(rename = "LastTagTime")]
    pub last_tag_time: String,
}

/// The `Config` of an image, in the shape of a container config (API < 1.50).
pub fn image_container_config(c: Option<&Value>) -> Value {
    let mut out = serde_json::json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
        "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(Value::Object(src)), Value::Object(dst)) = (c, &mut out) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryItem {
    #[serde(rename = "Comment")]
    pub comment: String,
    #[serde(rename = "Created")]
    pub created: i64,
    #[serde(rename = "CreatedBy")]
    pub created_by: String,
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Size")]
    pub size: i64,
    #[serde(rename = "Tags")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteItem {
    #[serde(rename = "Untagged", skip_serializing_if = "Option::is_none", default)]
    pub untagged: Option<String>,
    #[serde(rename = "Deleted", skip_serializing_if = "Option::is_none", default)]
    pub deleted: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePruneReport {
    #[serde(rename = "ImagesDeleted")]
    pub images_deleted: Option<Vec<DeleteItem>>,
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: i64,
}

/// `GET /system/df` (API < 1.52 shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskUsage {
    #[serde(rename = "LayersSize")]
    pub layers_size: i64,
    #[serde(rename = "Images")]
    pub images: Vec<ImageSummary>,
    #[serde(rename = "Containers")]
    pub containers: Vec<Value>,
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Value>,
    #[serde(rename = "BuildCache")]
    pub build_cache: Vec<Value>,
}

/// An entry of `GET /events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "status", skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    #[serde(rename = "from", skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    #[serde(rename = "scope")]
    pub scope: String,
    #[serde(rename = "time")]
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}
