//! `diff` and `commit`: a container's read-write layer read back as
//! changes, or made into an image by the image store (through
//! [`crate::ImageSource::commit`]), with the container frozen meanwhile unless
//! asked not to.

use std::collections::BTreeMap;
use std::path::Path;

use berth_snapshots::Change;
use berth_types::{Digest, Error, Result};
use serde_json::Value;

use crate::ContainerService;

/// `POST /commit` options.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// `repo[:tag]` for the new image; untagged when `None`.
    pub repo_tag: Option<String>,
    pub comment: String,
    pub author: String,
    /// Freeze the container while its layer is read (Docker's default).
    pub pause: bool,
    /// Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    /// The config the client sent; the container's when `None`.
    pub config: Option<Value>,
}

/// What a commit hands to the image store.
pub struct ContainerCommit<'a> {
    pub container_id: &'a str,
    /// The container's image: the parent of the new one.
    pub image: Digest,
    /// The read-write layer (an overlay upper dir).
    pub upper: &'a Path,
    /// The config to start from: the client's, or the container's.
    pub config: Value,
    pub changes: &'a [String],
    /// The container's `Config`, recorded as `container_config` and used to
    /// complete `config` (Docker's merge).
    pub container_config: &'a Value,
    pub author: &'a str,
    pub comment: &'a str,
    /// The history's `created_by`: the container's command.
    pub created_by: String,
    pub repo_tag: Option<&'a str>,
}

impl ContainerService {
    /// `GET /containers/{id}/changes`: what the container added, changed
    /// and deleted over its image. Blocks (walks the layer).
    pub fn changes(&self, name: &str) -> Result<Vec<Change>> {
        let row = self.find(name)?;
        let lowers = self.lower_dirs(&row)?;
        berth_snapshots::changes(&self.dir(&row.id).join("upper"), &lowers)
    }

    /// The container's read-write layer (an overlay upper dir), for a
    /// caller that makes the image itself (the builder:
    /// `ImageService::layer_from_dir` then `commit_image`). Read it only
    /// while the container is stopped or frozen.
    pub fn upper_dir(&self, name: &str) -> Result<std::path::PathBuf> {
        let row = self.find(name)?;
        Ok(self.dir(&row.id).join("upper"))
    }

    /// `POST /commit`: a new image from the container's changes. Returns
    /// the image ID.
    pub async fn commit(&self, name: &str, opts: CommitOptions) -> Result<Digest> {
        let row = self.find(name)?;
        let st = &row.record["State"];
        if st["Dead"].as_bool() == Some(true) {
            return Err(Error::conflict(format!(
                "You cannot commit container {} which is Dead",
                row.id
            )));
        }
        let freeze = opts.pause
            && st["Running"].as_bool() == Some(true)
            && st["Paused"].as_bool() != Some(true);
        if freeze {
            self.pause(&row.id, true).await?;
        }
        let images = self.images.clone();
        let upper = self.dir(&row.id).join("upper");
        let rec = row.record.clone();
        let id = row.id.clone();
        let o = opts.clone();
        let made = tokio::task::spawn_blocking(move || {
            let container_config = &rec["Config"];
            let created_by = crate::str_list(&container_config["Cmd"])
                .unwrap_or_default()
                .join(" ");
            images.commit(ContainerCommit {
                container_id: &id,
                image: row.image_id,
                upper: &upper,
                config: o.config.clone().unwrap_or_else(|| container_config.clone()),
                changes: &o.changes,
                container_config,
                author: &o.author,
                comment: &o.comment,
                created_by,
                repo_tag: o.repo_tag.as_deref(),
            })
        })
        .await
        .map_err(|e| Error::internal(format!("commit task failed: {e}")))
        .and_then(|r| r);
        // As Docker: the commit event comes while the container is still
        // frozen, the unpause after it.
        if let Ok(image) = &made {
            let mut attrs = BTreeMap::new();
            attrs.insert("name".to_string(), row.name.clone());
            attrs.insert(
                "image".to_string(),
                row.record["Config"]["Image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            if let Some(labels) = row.record["Config"]["Labels"].as_object() {
                for (k, v) in labels {
                    attrs.insert(k.clone(), v.as_str().unwrap_or("").to_string());
                }
            }
            attrs.insert("comment".into(), opts.comment.clone());
            attrs.insert("imageID".into(), image.to_string());
            attrs.insert(
                "imageRef".into(),
                opts.repo_tag.as_deref().map(familiar).unwrap_or_default(),
            );
            self.events.container_event("commit", &row.id, attrs);
        }
        if freeze && let Err(e) = self.pause(&row.id, false).await {
            tracing::warn!(container = %row.id, error = %e, "unpause after commit");
        }
        made
    }
}

/// `docker.io/library/app:v1` as `app:v1`.
fn familiar(full: &str) -> String {
    berth_types::Reference::parse(full)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| full.to_string())
}
