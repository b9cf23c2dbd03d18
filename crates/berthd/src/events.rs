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
        // dockerd fills the deprecated status/id/from only for containers
        // and images (`from` is a container's image).
        let legacy = typ == "container" || typ == "image";
        let from =
            (typ == "container").then(|| attributes.get("image").cloned().unwrap_or_default());
        let ev = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from,
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

    /// Past events at or after `since` (nanoseconds) — all kept ones when
    /// only `until` is given, none when neither is (as dockerd) — and a
    /// receiver for what follows. Subscribing under the history lock means
    /// no event is missed or doubled.
    pub fn subscribe(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap();
        let rx = self.tx.subscribe();
        let past = if since.is_none() && until.is_none() {
            vec![]
        } else {
            let s = since.unwrap_or(0);
            h.iter().filter(|e| e.time_nano >= s).cloned().collect()
        };
        (past, rx)
    }

    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Docker's event filters (moby's `daemon/events/filter.go`): values of one
/// key are alternatives, keys must all match, and every `label` must match.
/// `container`, `volume`, `network` and `daemon` match the actor's ID or
/// `name` attribute by prefix, whatever the event's type; `image` matches
/// an image event's ID or name, or a container event's `image`, with or
/// without the tag.
pub fn matches(ev: &Event, filters: &HashMap<String, Vec<String>>) -> bool {
    let vals = |k: &str| filters.get(k).filter(|v| !v.is_empty());
    let exact = |k: &str, source: &str| vals(k).is_none_or(|vs| vs.iter().any(|v| v == source));
    let fuzzy = |k: &str, source: &str| {
        vals(k).is_none_or(|vs| {
            vs.iter()
                .any(|v| v == source || source.starts_with(v.as_str()))
        })
    };
    let attr = |k: &str| ev.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let by_name = |k: &str| fuzzy(k, &ev.actor.id) || fuzzy(k, attr("name"));
    let event_ok = match vals("event").or(vals("action")) {
        None => true,
        Some(vs) => {
            let loose = vs
                .iter()
                .any(|v| ["health_status", "exec_create", "exec_start"].contains(&v.as_str()));
            vs.iter()
                .any(|v| ev.action == *v || (loose && ev.action.starts_with(v.as_str())))
        }
    };
    let image_ok = vals("image").is_none_or(|_| {
        let name = if ev.typ == "image" {
            attr("name")
        } else {
            attr("image")
        };
        exact("image", &ev.actor.id)
            || exact("image", name)
            || exact("image", strip_tag(&ev.actor.id))
            || exact("image", strip_tag(name))
    });
    let labels_ok = vals("label").is_none_or(|ls| {
        ls.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => ev.actor.attributes.get(k).is_some_and(|x| x == v),
            None => ev.actor.attributes.contains_key(l),
        })
    });
    event_ok
        && exact("type", &ev.typ)
        && exact("scope", &ev.scope)
        && by_name("daemon")
        && by_name("container")
        && by_name("volume")
        && by_name("network")
        && by_name("plugin")
        && image_ok
        && labels_ok
}

/// `busybox:1` → `busybox`; a digest or a registry port stays.
fn strip_tag(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(n, _)| n);
    match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => &image[..i],
        _ => image,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            status: None,
            id: None,
            from: None,
            typ: typ.into(),
            action: action.into(),
            actor: EventActor {
                id: id.into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            scope: "local".into(),
            time: 0,
            time_nano: 0,
        }
    }

    fn f(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn image_filter_matches_container_events_of_the_image() {
        let c = ev(
            "container",
            "create",
            "abc",
            &[("image", "busybox:1"), ("name", "web")],
        );
        assert!(matches(&c, &f(&[("image", &["busybox"])])));
        assert!(matches(&c, &f(&[("image", &["busybox:1"])])));
        assert!(!matches(&c, &f(&[("image", &["alpine"])])));
        let i = ev(
            "image",
            "tag",
            "sha256:1",
            &[("name", "localhost:5000/x:2")],
        );
        assert!(matches(&i, &f(&[("image", &["localhost:5000/x"])])));
    }

    #[test]
    fn names_match_by_prefix_and_labels_must_all_match() {
        let c = ev(
            "container",
            "start",
            "abcdef",
            &[("name", "web-1"), ("a", "1"), ("b", "2")],
        );
        assert!(matches(&c, &f(&[("container", &["abc"])])));
        assert!(matches(&c, &f(&[("container", &["web"])])));
        assert!(!matches(&c, &f(&[("container", &["db"])])));
        assert!(matches(&c, &f(&[("label", &["a=1", "b"])])));
        assert!(!matches(&c, &f(&[("label", &["a=1", "c"])])));
        // Values of one key are alternatives; keys must all match.
        assert!(matches(
            &c,
            &f(&[("event", &["stop", "start"]), ("type", &["container"])])
        ));
        assert!(!matches(
            &c,
            &f(&[("event", &["start"]), ("type", &["image"])])
        ));
    }

    #[test]
    fn exec_events_match_without_their_command() {
        let e = ev("container", "exec_start: sh -c true", "abc", &[]);
        assert!(matches(&e, &f(&[("event", &["exec_start"])])));
        assert!(!matches(&e, &f(&[("event", &["exec_create"])])));
        let d = ev("container", "exec_die", "abc", &[]);
        assert!(matches(&d, &f(&[("event", &["exec_die"])])));
    }

    #[test]
    fn history_is_replayed_with_since_or_until_only() {
        let bus = EventBus::default();
        bus.publish("volume", "create", "v", BTreeMap::new());
        assert!(bus.subscribe(None, None).0.is_empty());
        assert_eq!(bus.subscribe(Some(0), None).0.len(), 1);
        assert_eq!(bus.subscribe(None, Some(i64::MAX)).0.len(), 1);
        assert!(bus.subscribe(Some(i64::MAX), None).0.is_empty());
    }
}
