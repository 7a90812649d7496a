//! The Persister's pictures of running flows, without actix: events applied and coalesced (a
//! picture changed by an event is dirty until the next periodic write; a state change is
//! written at once), and a final state hidden from readers until it is durable.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::flow::{FlowEvent, FlowPicture, FlowState};
use crate::events::Mark;

struct Entry {
    picture: FlowPicture,
    /// Changed since the last write.
    dirty: bool,
    /// While a final state is being written: the picture as it was before, which readers still
    /// get — a final state is told to nobody before it is durable.
    shown: Option<FlowPicture>,
}

impl Entry {
    /// What readers see now.
    fn visible(&self) -> &FlowPicture {
        self.shown.as_ref().unwrap_or(&self.picture)
    }
}

/// What applying an event asks of the writer.
#[derive(Debug)]
pub enum Applied {
    /// The flow is not tracked: the event is dropped.
    Untracked,
    /// Coalesced into the next periodic write.
    Coalesced,
    /// The state changed: write this picture now.
    WriteNow(Box<FlowPicture>),
}

/// A state transition to write now.
pub struct Transitioned {
    /// The picture with its new state.
    pub picture: FlowPicture,
    /// The state became final: readers see the picture before it until
    /// [`Pictures::final_written`] says the write succeeded.
    pub is_final: bool,
    /// The picture before the transition, for what followers are told it changed.
    pub mark: Mark,
}

/// The pictures of the flows the Persister tracks, by flow id.
#[derive(Default)]
pub struct Pictures {
    entries: HashMap<i64, Entry>,
}

impl Pictures {
    /// Starts keeping flow `flow_id`'s picture (as stored: not dirty).
    pub fn track(&mut self, flow_id: i64, picture: FlowPicture) {
        let entry = Entry {
            picture,
            dirty: false,
            shown: None,
        };
        self.entries.insert(flow_id, entry);
    }

    /// Flow `flow_id`'s picture with every event applied (final state included).
    pub fn current(&self, flow_id: i64) -> Option<&FlowPicture> {
        self.entries.get(&flow_id).map(|e| &e.picture)
    }

    /// What readers of flow `flow_id` see: the current picture, except for a final state not
    /// yet written.
    pub fn visible(&self, flow_id: i64) -> Option<&FlowPicture> {
        self.entries.get(&flow_id).map(Entry::visible)
    }

    /// The state readers see of every tracked flow.
    pub fn visible_states(&self) -> Vec<(i64, FlowState)> {
        self.entries
            .iter()
            .map(|(id, e)| (*id, e.visible().state))
            .collect()
    }

    /// Applies `event` to flow `flow_id`'s picture at `now`.
    pub fn apply(&mut self, flow_id: i64, event: &FlowEvent, now: DateTime<Utc>) -> Applied {
        let Some(entry) = self.entries.get_mut(&flow_id) else {
            return Applied::Untracked;
        };
        if entry.picture.apply(event, now) {
            entry.dirty = false;
            Applied::WriteNow(Box::new(entry.picture.clone()))
        } else {
            entry.dirty = true;
            Applied::Coalesced
        }
    }

    /// Moves flow `flow_id` to `state` at `now`; `None` when the flow is not tracked. The
    /// returned picture is to be written now (it is no longer dirty).
    pub fn transition(&mut self, flow_id: i64, state: FlowState, now: DateTime<Utc>) -> Option<Transitioned> {
        let entry = self.entries.get_mut(&flow_id)?;
        let mark = Mark::of(&entry.picture);
        let is_final = state.is_final() && !entry.picture.state.is_final();
        if is_final {
            entry.shown = Some(entry.picture.clone());
        }
        entry.picture.apply(&FlowEvent::State(state), now);
        entry.dirty = false;
        Some(Transitioned {
            picture: entry.picture.clone(),
            is_final,
            mark,
        })
    }

    /// The write of flow `flow_id`'s final state ended: once durable (`ok`), the picture leaves
    /// memory (readers get it from the database); otherwise readers keep the state before it.
    pub fn final_written(&mut self, flow_id: i64, ok: bool) {
        if ok {
            self.entries.remove(&flow_id);
            return;
        }
        if let Some(entry) = self.entries.get_mut(&flow_id) {
            if let Some(shown) = entry.shown.take() {
                entry.picture = shown;
            }
        }
    }

    /// Forgets flow `flow_id` without writing it (another instance took it over).
    pub fn untrack(&mut self, flow_id: i64) {
        self.entries.remove(&flow_id);
    }

    /// Every dirty picture, to write now (they are clean afterwards).
    pub fn take_dirty(&mut self) -> Vec<FlowPicture> {
        self.entries
            .values_mut()
            .filter(|e| e.dirty)
            .map(|e| {
                e.dirty = false;
                e.picture.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dag::{Dag, DagNode, NodeKind};
    use crate::domain::flow::Level;
    use crate::domain::time;

    fn picture(output_id: i64) -> FlowPicture {
        let dag = Dag::build(vec![
            DagNode::new("a", NodeKind::Ingest, vec![]),
            DagNode::new("a->t", NodeKind::Persist, vec!["a".into()]),
        ])
        .unwrap();
        FlowPicture::new_ready(output_id, &dag, 100)
    }

    fn log(message: &str) -> FlowEvent {
        FlowEvent::Log {
            level: Level::Info,
            task: None,
            message: message.into(),
        }
    }

    fn tracked(ids: &[i64]) -> Pictures {
        let mut pictures = Pictures::default();
        for id in ids {
            pictures.track(*id, picture(*id));
        }
        pictures
    }

    #[test]
    fn events_are_coalesced_into_one_write_per_flow() {
        let mut pictures = tracked(&[1, 2, 3]);
        let now = time::now();
        for i in 0..5 {
            assert!(matches!(
                pictures.apply(1, &log(&format!("line {i}")), now),
                Applied::Coalesced
            ));
        }
        assert!(matches!(
            pictures.apply(2, &log("other"), now),
            Applied::Coalesced
        ));
        let mut written: Vec<i64> = pictures.take_dirty().iter().map(|p| p.output_id).collect();
        written.sort_unstable();
        assert_eq!(written, vec![1, 2], "flow 3 did not change");
        assert!(pictures.take_dirty().is_empty(), "nothing changed since");
        assert_eq!(pictures.current(1).unwrap().logs.lines.len(), 5);
    }

    #[test]
    fn an_event_for_an_untracked_flow_is_dropped() {
        let mut pictures = tracked(&[1]);
        assert!(matches!(
            pictures.apply(9, &log("x"), time::now()),
            Applied::Untracked
        ));
        assert!(pictures.take_dirty().is_empty());
        assert!(pictures.transition(9, FlowState::Running, time::now()).is_none());
    }

    #[test]
    fn a_state_change_is_written_at_once() {
        let mut pictures = tracked(&[1]);
        let now = time::now();
        pictures.apply(1, &log("before"), now);
        let Applied::WriteNow(written) = pictures.apply(1, &FlowEvent::State(FlowState::Running), now) else {
            panic!("a state change is written at once");
        };
        assert_eq!(written.state, FlowState::Running);
        assert!(
            written.logs.lines.iter().any(|l| l.contains("before")),
            "with what was coalesced before it"
        );
        assert!(pictures.take_dirty().is_empty(), "and it is no longer dirty");
    }

    #[test]
    fn a_running_transition_is_visible_at_once() {
        let mut pictures = tracked(&[1]);
        let t = pictures.transition(1, FlowState::Running, time::now()).unwrap();
        assert!(!t.is_final);
        assert_eq!(t.picture.state, FlowState::Running);
        assert_eq!(pictures.visible(1).unwrap().state, FlowState::Running);
        assert_eq!(pictures.visible_states(), vec![(1, FlowState::Running)]);
    }

    #[test]
    fn a_final_state_is_hidden_until_written_then_the_picture_leaves_memory() {
        let mut pictures = tracked(&[1]);
        let now = time::now();
        pictures.transition(1, FlowState::Running, now);
        let t = pictures.transition(1, FlowState::Completed, now).unwrap();
        assert!(t.is_final);
        assert_eq!(t.picture.state, FlowState::Completed);
        assert_eq!(
            pictures.visible(1).unwrap().state,
            FlowState::Running,
            "not durable yet"
        );
        assert_eq!(pictures.current(1).unwrap().state, FlowState::Completed);
        pictures.final_written(1, true);
        assert!(pictures.visible(1).is_none());
        assert!(pictures.visible_states().is_empty());
    }

    #[test]
    fn a_final_state_that_could_not_be_written_is_taken_back() {
        let mut pictures = tracked(&[1]);
        let now = time::now();
        pictures.transition(1, FlowState::Running, now);
        pictures.transition(1, FlowState::Failed, now);
        pictures.final_written(1, false);
        assert_eq!(pictures.visible(1).unwrap().state, FlowState::Running);
        assert_eq!(pictures.current(1).unwrap().state, FlowState::Running);
        let again = pictures.transition(1, FlowState::Failed, now).unwrap();
        assert!(again.is_final, "the final state can be written again");
    }

    #[test]
    fn a_second_final_state_is_not_final_news() {
        let mut pictures = tracked(&[1]);
        let now = time::now();
        pictures.transition(1, FlowState::Cancelled, now);
        let t = pictures.transition(1, FlowState::Failed, now).unwrap();
        assert!(!t.is_final);
        assert_eq!(
            t.picture.state,
            FlowState::Cancelled,
            "a final state never changes"
        );
    }
}
