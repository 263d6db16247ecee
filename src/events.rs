//! Events (events.k8s.io/v1) about the operator's objects, which are all cluster-scoped.
//!
//! An Event is namespaced, so one about a cluster-scoped object needs a namespace of its own:
//! Kubernetes before 1.22 accepts only `kube-system` there, 1.22 and later also `default`. The
//! namespace is chosen from the API server's version at start ([`cluster_events_namespace`]), or
//! forced with `--events-namespace`. The chart grants create and patch on events in exactly these
//! two namespaces. `kubectl describe` finds the events either way: it looks them up by the object
//! they regard, in every namespace.
//!
//! Repeats of the same note about the same object (type, reason, action) become a series on one
//! Event (`series.count`), as kube-runtime's Recorder does; a changed note is a new Event (the
//! Recorder would have folded it into the earlier one, hiding e.g. "NOT deleted" behind "cannot be
//! deleted yet").

use crate::consts;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Namespace of events about cluster-scoped objects on API servers before 1.22 (the only one
/// they accept).
pub const NAMESPACE_LEGACY: &str = "kube-system";
/// Namespace of events about cluster-scoped objects on API servers 1.22 and later.
pub const NAMESPACE_CURRENT: &str = "default";
/// A repeat within this long of the last one continues the series; later, a new Event starts.
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Remembered series beyond this many keys are forgotten (a forgotten key just starts anew).
const SERIES_KEPT: usize = 10_000;
/// Longest note the API accepts (bytes).
const NOTE_MAX: usize = 1024;

/// Where events about cluster-scoped objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EventsNamespace {
    /// `kube-system` before Kubernetes 1.22, `default` from 1.22 on (asked from the API server).
    #[default]
    Auto,
    /// Always `default` (Kubernetes 1.22 and later only).
    Default,
    /// Always `kube-system` (accepted by every version).
    KubeSystem,
}

/// The namespace for events about cluster-scoped objects on an API server whose `/version` says
/// `major`.`minor` (e.g. `1` and `20`, or `1` and `21+` as some distributions write it). An
/// unreadable version gets `kube-system`, which every version accepts.
pub fn cluster_events_namespace(major: &str, minor: &str) -> &'static str {
    let number = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) if (major, minor) >= (1, 22) => NAMESPACE_CURRENT,
        _ => NAMESPACE_LEGACY,
    }
}

/// Resolve `choice` against the API server (`Auto` asks for its version; if that fails,
/// `kube-system`, which every version accepts).
pub async fn resolve_namespace(client: &Client, choice: EventsNamespace) -> &'static str {
    match choice {
        EventsNamespace::Default => NAMESPACE_CURRENT,
        EventsNamespace::KubeSystem => NAMESPACE_LEGACY,
        EventsNamespace::Auto => match client.apiserver_version().await {
            Ok(v) => {
                let ns = cluster_events_namespace(&v.major, &v.minor);
                tracing::info!(version = %v.git_version, namespace = ns, "events about cluster-scoped objects go to this namespace");
                ns
            }
            Err(e) => {
                tracing::warn!(error = %e, namespace = NAMESPACE_LEGACY, "cannot read the API server version; events go to kube-system");
                NAMESPACE_LEGACY
            }
        },
    }
}

/// The last Event of one key: its name and namespace, note, count and time.
#[derive(Debug, Clone)]
struct Sent {
    name: String,
    namespace: String,
    note: String,
    count: i32,
    at: Timestamp,
}

/// Publishes events about the operator's objects.
#[derive(Clone)]
pub struct Events {
    client: Client,
    instance: String,
    /// Namespace of events about cluster-scoped objects.
    namespace: String,
    sent: Arc<Mutex<HashMap<String, Sent>>>,
}

/// What to do for one publish.
#[derive(Debug, PartialEq)]
enum Step {
    /// A new Event.
    Create,
    /// Continue the series of this Event (name, namespace) with this count.
    Repeat(String, String, i32),
}

/// Decide between a new Event and a repeat of the last one of the same key.
fn step(last: Option<&Sent>, note: &str, now: Timestamp) -> Step {
    match last {
        Some(s) if s.note == note && now.duration_since(s.at) < SERIES_TTL => Step::Repeat(
            s.name.clone(),
            s.namespace.clone(),
            s.count.saturating_add(1),
        ),
        _ => Step::Create,
    }
}

/// At most [`NOTE_MAX`] bytes, cut at a character boundary.
fn clip(note: String) -> String {
    if note.len() <= NOTE_MAX {
        return note;
    }
    let mut end = NOTE_MAX;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

impl Events {
    /// A publisher reporting as `instance` (pod or node name), putting events about
    /// cluster-scoped objects into `namespace` (see [`resolve_namespace`]).
    pub fn new(client: Client, instance: &str, namespace: &str) -> Events {
        Events {
            client,
            instance: instance.to_string(),
            namespace: namespace.to_string(),
            sent: Arc::default(),
        }
    }

    /// Publish; failures are logged, never fatal. Returns whether the API server took it.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> bool {
        let reference = obj.object_ref(&());
        let note = clip(note);
        let key = format!(
            "{}/{}/{}/{warning}/{reason}/{action}",
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref().unwrap_or_default(),
            reference
                .uid
                .as_deref()
                .or(reference.name.as_deref())
                .unwrap_or_default(),
        );
        let now = Timestamp::now();
        let last = self
            .sent
            .lock()
            .ok()
            .and_then(|sent| sent.get(&key).cloned());
        let result = match step(last.as_ref(), &note, now) {
            Step::Repeat(name, namespace, count) => {
                match self.repeat(&name, &namespace, count, now).await {
                    // The Event is gone (expired): start anew.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.create(&reference, warning, reason, action, &note, now)
                            .await
                    }
                    other => other.map(|()| Sent {
                        name,
                        namespace,
                        note: note.clone(),
                        count,
                        at: now,
                    }),
                }
            }
            Step::Create => {
                self.create(&reference, warning, reason, action, &note, now)
                    .await
            }
        };
        match result {
            Ok(sent) => {
                if let Ok(mut all) = self.sent.lock() {
                    if all.len() >= SERIES_KEPT {
                        all.clear();
                    }
                    all.insert(key, sent);
                }
                true
            }
            Err(e) => {
                tracing::warn!(reason, error = %e, "could not publish event");
                false
            }
        }
    }

    async fn create(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
        now: Timestamp,
    ) -> kube::Result<Sent> {
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or(consts::REPORTER),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            regarding: Some(reference.clone()),
            reporting_controller: Some(consts::REPORTER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(Sent {
            name,
            namespace,
            note: note.to_string(),
            count: 1,
            at: now,
        })
    }

    async fn repeat(
        &self,
        name: &str,
        namespace: &str,
        count: i32,
        now: Timestamp,
    ) -> kube::Result<()> {
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(now),
        };
        let patch = serde_json::json!({ "series": series });
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_about_cluster_scoped_objects_go_to_kube_system_before_1_22() {
        for (major, minor) in [("1", "20"), ("1", "21+"), ("1", "16"), ("0", "99")] {
            assert_eq!(
                cluster_events_namespace(major, minor),
                "kube-system",
                "{major}.{minor}"
            );
        }
        for (major, minor) in [("1", "22"), ("1", "30+"), ("1", "35"), ("2", "0")] {
            assert_eq!(
                cluster_events_namespace(major, minor),
                "default",
                "{major}.{minor}"
            );
        }
        // Unreadable: kube-system, which every version accepts.
        assert_eq!(cluster_events_namespace("", ""), "kube-system");
        assert_eq!(cluster_events_namespace("v1", "x"), "kube-system");
    }

    #[test]
    fn a_repeated_note_continues_the_series_and_a_changed_one_starts_a_new_event() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let sent = Sent {
            name: "esf.1".into(),
            namespace: "kube-system".into(),
            note: "Snapshot a saved".into(),
            count: 2,
            at,
        };
        let soon = at + SignedDuration::from_secs(30);
        assert_eq!(step(None, "x", soon), Step::Create);
        assert_eq!(
            step(Some(&sent), "Snapshot a saved", soon),
            Step::Repeat("esf.1".into(), "kube-system".into(), 3)
        );
        assert_eq!(
            step(Some(&sent), "Snapshot a NOT saved", soon),
            Step::Create
        );
        let late = at + SignedDuration::from_mins(7);
        assert_eq!(step(Some(&sent), "Snapshot a saved", late), Step::Create);
    }

    #[test]
    fn long_notes_are_clipped_at_a_character_boundary() {
        let note = "é".repeat(600);
        let clipped = clip(note);
        assert!(clipped.len() <= NOTE_MAX);
        assert!(clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("short".into()), "short");
    }
}
