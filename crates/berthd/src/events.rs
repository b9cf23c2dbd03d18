//! The event bus behind `GET /events`: a broadcast channel for live
//! listeners and a bounded history for `since`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_api::{Event, EventActor};
use tokio::sync::broadcast;

const HISTORY: usize = 1024;

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(1024).0,
            history: Mutex::new(VecDeque::new()),
        }
    }
}

impl EventBus {
    /// Publish an event of `typ` (`image`, `container`, …).
    pub fn publish(&self, typ: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // dockerd fills the deprecated status/id only for containers and images.
        let legacy = typ == "container" || typ == "image";
        let ev = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: None,
            typ: typ.to_string(),
            action: action.to_string(),
            actor: EventActor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".into(),
            time: now.as_secs() as i64,
            time_nano: now.as_nanos() as i64,
        };
        {
            let mut h = self.history.lock().unwrap();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// Past events at or after `since_nanos`, and a receiver for what follows.
    /// Subscribing under the history lock means no event is missed or doubled.
    pub fn subscribe(&self, since_nanos: Option<i64>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap();
        let rx = self.tx.subscribe();
        let past = match since_nanos {
            Some(s) => h.iter().filter(|e| e.time_nano >= s).cloned().collect(),
            None => vec![],
        };
        (past, rx)
    }

    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Docker's event filters: type, event/action, image, container, label, scope.
pub fn matches(ev: &Event, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, vals)| {
        if vals.is_empty() {
            return true;
        }
        vals.iter().any(|v| match k.as_str() {
            "type" => ev.typ == *v,
            // dockerd's rule: `health_status`, `exec_create` and
            // `exec_start` without a colon match every `<name>: <detail>`.
            "event" | "action" => {
                ev.action == *v
                    || (!v.contains(':')
                        && ["health_status", "exec_create", "exec_start"].contains(&v.as_str())
                        && ev.action.split_once(": ").is_some_and(|(a, _)| a == v))
            }
            "scope" => ev.scope == *v,
            "image" => {
                ev.typ == "image"
                    && (ev.actor.id == *v
                        || ev
                            .actor
                            .id
                            .strip_prefix("sha256:")
                            .is_some_and(|h| h.starts_with(v.as_str()))
                        || ev
                            .actor
                            .attributes
                            .get("name")
                            .is_some_and(|n| n == v || n.split(':').next() == Some(v)))
            }
            "container" => {
                ev.typ == "container"
                    && (ev.actor.id.starts_with(v.as_str())
                        || ev.actor.attributes.get("name") == Some(v))
            }
            "volume" => ev.typ == "volume" && ev.actor.id == *v,
            "network" => {
                ev.typ == "network"
                    && (ev.actor.id.starts_with(v.as_str())
                        || ev.actor.attributes.get("name") == Some(v))
            }
            "label" => match v.split_once('=') {
                Some((lk, lv)) => ev.actor.attributes.get(lk).is_some_and(|x| x == lv),
                None => ev.actor.attributes.contains_key(v),
            },
            _ => false,
        })
    })
}

pub const EVENT_FILTERS: &[&str] = &[
    "type",
    "event",
    "action",
    "scope",
    "image",
    "container",
    "label",
    "network",
    "volume",
    "daemon",
    "plugin",
    "node",
    "service",
    "secret",
    "config",
];
