//! The FlowSupervisor's bookkeeping, without actix: which flows wait for a slot (first in
//! first out), which one is starting, which run, which wait out a restart delay, how often each
//! restarted, and where a cancel must go. Every method changes the state and returns what the
//! supervisor must do next; the supervisor does the messaging and the IO.
//!
//! Flows of an incremental input are serialized: while one of them is starting, running or
//! waiting to restart, the input is held and its other flows keep their place in the queue
//! (READY) while flows behind them may start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Delay before restart `n` (1-based): 0.5 s, 1 s, 2 s, ... capped at 30 s.
pub fn restart_delay(n: u32) -> Duration {
    super::task::retry_delay(n)
}

/// Where a cancel request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRoute {
    /// The flow was waiting (for a slot or a restart) and is no longer: the supervisor makes
    /// it CANCELLED itself, then calls [`Admission::forget`].
    Idle,
    /// The flow is being loaded: its actor is cancelled as soon as it is started.
    WhenStarted,
    /// The flow runs: the cancel goes to its actor.
    Running,
    /// The supervisor does not know the flow.
    Unknown,
}

/// What a crash report leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashDecision {
    /// A second report of a crash already handled: nothing to do.
    Duplicate,
    /// Restart number `attempt` after `delay` (then call [`Admission::restart_due`]).
    Restart { attempt: u32, delay: Duration },
    /// Crashed too often (or shutting down): the flow becomes FAILED, then call
    /// [`Admission::forget`]. `attempt` is the restart it would have been.
    GiveUp { attempt: u32 },
    /// Crashed after its actor accepted a cancel: the flow becomes CANCELLED (a restart would
    /// run what the user stopped), then call [`Admission::forget`].
    Cancelled,
}

/// What losing a flow's lease means for it here (see [`Admission::lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Its actor runs: stop it without ending the flow (the new owner ends it).
    Running,
    /// It is being loaded: stop its actor as soon as it is started.
    WhenStarted,
    /// It waited (for a slot or a restart); it is gone from here.
    Idle,
    /// The supervisor does not know it (it ended meanwhile).
    Unknown,
}

/// What to do once a flow's actor has been started (see [`Admission::started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Started {
    /// A cancel arrived while the flow was being loaded: send it to the actor now.
    pub cancel: bool,
    /// Its lease was lost while it was being loaded: stop the actor now (another instance
    /// runs the flow).
    pub lost: bool,
    /// The flow was found unfinished at start-up: its log says it resumed.
    pub recovered: bool,
}

/// The admission, restart and cancel state of every flow the supervisor knows.
#[derive(Debug)]
pub struct Admission {
    /// At most this many flows run (or start) at once.
    max_running: usize,
    /// A flow crashes at most this many times before it is failed.
    max_restarts: u32,
    /// Flows waiting for a slot, in arrival order (a restart goes first).
    waiting: VecDeque<i64>,
    /// The flow whose plan is being loaded (it holds a slot). One at a time, so flows start in
    /// exactly the order they were admitted.
    starting: Option<i64>,
    /// Flows whose actor runs.
    running: HashSet<i64>,
    /// Cancels that arrived while the flow was starting.
    cancel_on_start: HashSet<i64>,
    /// Starting flows whose lease was lost meanwhile: their actor is stopped once started.
    lost_on_start: HashSet<i64>,
    /// Running flows whose actor accepted a cancel.
    cancelled: HashSet<i64>,
    /// Crashed flows waiting out their restart delay, with the restart number.
    restarting: HashMap<i64, u32>,
    /// Restarts so far, per flow (reset when the flow ends).
    restarts: HashMap<i64, u32>,
    /// Flows found unfinished at start-up that have not started again yet.
    recovered: HashSet<i64>,
    /// Flows of incremental inputs (flow id to input id): one flow of such an input runs at a
    /// time.
    exclusive: HashMap<i64, i64>,
    /// Shutting down: admit nothing more, restart nothing.
    parked: bool,
}

impl Admission {
    pub fn new(max_running: usize, max_restarts: u32) -> Self {
        Admission {
            max_running,
            max_restarts,
            waiting: VecDeque::new(),
            starting: None,
            running: HashSet::new(),
            cancel_on_start: HashSet::new(),
            lost_on_start: HashSet::new(),
            cancelled: HashSet::new(),
            restarting: HashMap::new(),
            restarts: HashMap::new(),
            recovered: HashSet::new(),
            exclusive: HashMap::new(),
            parked: false,
        }
    }

    /// A new flow (of incremental input `exclusive_input`, if any) waits for a slot; a flow
    /// already waiting, starting or running keeps its place.
    pub fn submit(&mut self, flow_id: i64, exclusive_input: Option<i64>) {
        if let Some(input) = exclusive_input {
            self.exclusive.insert(flow_id, input);
        }
        let known = self.waiting.contains(&flow_id)
            || self.running.contains(&flow_id)
            || self.starting == Some(flow_id);
        if !known {
            self.waiting.push_back(flow_id);
        }
    }

    /// A flow a previous process left unfinished (`was_running`: RUNNING, not READY) waits for
    /// a slot.
    pub fn recover(&mut self, flow_id: i64, exclusive_input: Option<i64>, was_running: bool) {
        if let Some(input) = exclusive_input {
            self.exclusive.insert(flow_id, input);
        }
        if was_running {
            self.recovered.insert(flow_id);
        }
        if !self.waiting.contains(&flow_id) {
            self.waiting.push_back(flow_id);
        }
    }

    /// The next flow to start, if a slot is free: the first waiting one whose input is not
    /// held. It is `starting` until [`Admission::started`] or [`Admission::not_started`].
    pub fn admit_next(&mut self) -> Option<i64> {
        if self.parked || self.starting.is_some() || self.running.len() >= self.max_running {
            return None;
        }
        let held = self.held_inputs();
        let position = self
            .waiting
            .iter()
            .position(|id| self.exclusive.get(id).is_none_or(|input| !held.contains(input)))?;
        let flow_id = self.waiting.remove(position)?;
        self.starting = Some(flow_id);
        Some(flow_id)
    }

    /// The inputs held by a flow that is starting, running or waiting to restart.
    fn held_inputs(&self) -> HashSet<i64> {
        self.running
            .iter()
            .copied()
            .chain(self.starting)
            .chain(self.restarting.keys().copied())
            .filter_map(|id| self.exclusive.get(&id).copied())
            .collect()
    }

    /// The starting flow's actor runs now.
    pub fn started(&mut self, flow_id: i64) -> Started {
        self.end_start(flow_id);
        self.running.insert(flow_id);
        let cancel = self.cancel_on_start.remove(&flow_id);
        if cancel {
            // A starting actor always accepts the cancel it is sent.
            self.cancelled.insert(flow_id);
        }
        Started {
            cancel,
            lost: self.lost_on_start.remove(&flow_id),
            recovered: self.recovered.remove(&flow_id),
        }
    }

    /// The starting flow did not start (it had ended already, or its plan cannot be loaded).
    pub fn not_started(&mut self, flow_id: i64) {
        self.end_start(flow_id);
        self.cancel_on_start.remove(&flow_id);
        self.lost_on_start.remove(&flow_id);
        self.recovered.remove(&flow_id);
    }

    fn end_start(&mut self, flow_id: i64) {
        if self.starting == Some(flow_id) {
            self.starting = None;
        }
    }

    /// Where a cancel of `flow_id` goes. A waiting flow leaves the queue (or its pending
    /// restart) at once.
    pub fn cancel(&mut self, flow_id: i64) -> CancelRoute {
        if let Some(position) = self.waiting.iter().position(|id| *id == flow_id) {
            self.waiting.remove(position);
            return CancelRoute::Idle;
        }
        if self.restarting.remove(&flow_id).is_some() {
            return CancelRoute::Idle;
        }
        if self.starting == Some(flow_id) {
            self.cancel_on_start.insert(flow_id);
            return CancelRoute::WhenStarted;
        }
        if self.running.contains(&flow_id) {
            return CancelRoute::Running;
        }
        CancelRoute::Unknown
    }

    /// The flow's actor ended it (`is_final`: in a final state; otherwise it was suspended
    /// for shutdown and stays RUNNING for the next process).
    pub fn ended(&mut self, flow_id: i64, is_final: bool) {
        self.running.remove(&flow_id);
        self.cancelled.remove(&flow_id);
        self.restarts.remove(&flow_id);
        if is_final {
            self.exclusive.remove(&flow_id);
        }
    }

    /// The flow's execution crashed: restart it from its checkpoints, or give up.
    pub fn crashed(&mut self, flow_id: i64) -> CrashDecision {
        let was_running = self.running.remove(&flow_id);
        if !was_running && self.starting != Some(flow_id) && self.restarting.contains_key(&flow_id) {
            // A second report of the same crash (the actor's drop guard).
            return CrashDecision::Duplicate;
        }
        if self.cancelled.remove(&flow_id) {
            self.restarts.remove(&flow_id);
            return CrashDecision::Cancelled;
        }
        let attempt = self.restarts.get(&flow_id).copied().unwrap_or(0) + 1;
        if attempt <= self.max_restarts && !self.parked {
            self.restarts.insert(flow_id, attempt);
            self.restarting.insert(flow_id, attempt);
            CrashDecision::Restart {
                attempt,
                delay: restart_delay(attempt),
            }
        } else {
            self.restarts.remove(&flow_id);
            CrashDecision::GiveUp { attempt }
        }
    }

    /// The actor of running flow `flow_id` accepted a cancel (a crash from now on ends it
    /// CANCELLED).
    pub fn cancel_accepted(&mut self, flow_id: i64) {
        if self.running.contains(&flow_id) {
            self.cancelled.insert(flow_id);
        }
    }

    /// A crashed flow's restart delay is over: it goes first in the queue. False when the
    /// restart was cancelled meanwhile.
    pub fn restart_due(&mut self, flow_id: i64) -> bool {
        if self.restarting.remove(&flow_id).is_none() {
            return false;
        }
        self.waiting.push_front(flow_id);
        true
    }

    /// A flow that was not running ended for good (cancelled while waiting, or failed after
    /// too many crashes): its restarts and its hold on its input go.
    pub fn forget(&mut self, flow_id: i64) {
        self.restarts.remove(&flow_id);
        self.exclusive.remove(&flow_id);
    }

    /// Another instance took flow `flow_id` over (this one's lease on it ran out): it leaves
    /// the queue or its pending restart at once; a running or starting flow is stopped by the
    /// supervisor, then ends here through [`Admission::ended`] (not final: the new owner ends
    /// it).
    pub fn lost(&mut self, flow_id: i64) -> Lost {
        self.cancel_on_start.remove(&flow_id);
        self.recovered.remove(&flow_id);
        let idle = if let Some(position) = self.waiting.iter().position(|id| *id == flow_id) {
            self.waiting.remove(position);
            true
        } else {
            self.restarting.remove(&flow_id).is_some()
        };
        if idle {
            self.forget(flow_id);
            return Lost::Idle;
        }
        if self.starting == Some(flow_id) {
            self.lost_on_start.insert(flow_id);
            return Lost::WhenStarted;
        }
        if self.running.contains(&flow_id) {
            self.cancelled.remove(&flow_id);
            return Lost::Running;
        }
        Lost::Unknown
    }

    /// Every flow this supervisor holds: waiting, starting, running or waiting to restart (with
    /// several instances, the flows whose leases it renews).
    pub fn held(&self) -> Vec<i64> {
        let mut held: Vec<i64> = self
            .waiting
            .iter()
            .copied()
            .chain(self.starting)
            .chain(self.running.iter().copied())
            .chain(self.restarting.keys().copied())
            .collect();
        held.sort_unstable();
        held.dedup();
        held
    }

    /// How many more flows this supervisor may take on now (with several instances, how many
    /// it may claim): free slots, less the flows already waiting for one.
    pub fn room(&self) -> usize {
        if self.parked {
            return 0;
        }
        let taken = self.running.len()
            + usize::from(self.starting.is_some())
            + self.waiting.len()
            + self.restarting.len();
        self.max_running.saturating_sub(taken)
    }

    /// Shutting down: nothing more starts or restarts.
    pub fn park(&mut self) {
        self.parked = true;
    }

    /// Whether the supervisor is shutting down.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// How many times a flow may crash and restart.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// How many flows wait for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// How many flows run.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts every flow that may start now, in order.
    fn start_all(admission: &mut Admission) -> Vec<i64> {
        let mut started = Vec::new();
        while let Some(id) = admission.admit_next() {
            admission.started(id);
            started.push(id);
        }
        started
    }

    #[test]
    fn flows_start_first_in_first_out_up_to_the_slots() {
        let mut a = Admission::new(2, 3);
        for id in 1..=4 {
            a.submit(id, None);
        }
        assert_eq!(start_all(&mut a), vec![1, 2]);
        assert_eq!((a.running(), a.waiting()), (2, 2));
        a.ended(2, true);
        assert_eq!(start_all(&mut a), vec![3]);
        a.ended(1, true);
        assert_eq!(start_all(&mut a), vec![4]);
        assert_eq!(start_all(&mut a), Vec::<i64>::new());
    }

    #[test]
    fn a_lost_lease_takes_a_flow_out_wherever_it_is() {
        let mut a = Admission::new(4, 3);
        for id in 1..=4 {
            a.submit(id, None);
        }
        assert_eq!(a.room(), 0);
        assert_eq!(a.admit_next(), Some(1));
        a.started(1);
        assert_eq!(a.admit_next(), Some(2));
        assert_eq!(a.held(), vec![1, 2, 3, 4]);
        assert_eq!(a.lost(3), Lost::Idle);
        assert_eq!(a.lost(1), Lost::Running);
        assert_eq!(a.lost(2), Lost::WhenStarted);
        let started = a.started(2);
        assert!(started.lost && !started.cancel);
        a.ended(1, false);
        a.ended(2, false);
        assert_eq!(a.held(), vec![4]);
        assert_eq!(a.room(), 3);
        assert_eq!(a.lost(9), Lost::Unknown);
        assert_eq!(start_all(&mut a), vec![4], "flow 3 left the queue");
    }

    #[test]
    fn room_counts_every_flow_held_and_none_when_parked() {
        let mut a = Admission::new(3, 3);
        a.submit(1, None);
        assert_eq!(a.room(), 2);
        assert_eq!(a.admit_next(), Some(1));
        a.started(1);
        assert!(matches!(a.crashed(1), CrashDecision::Restart { .. }));
        assert_eq!(a.room(), 2, "a flow waiting to restart keeps its slot");
        assert_eq!(a.held(), vec![1]);
        a.park();
        assert_eq!(a.room(), 0);
    }

    #[test]
    fn one_flow_starts_at_a_time() {
        let mut a = Admission::new(5, 3);
        a.submit(1, None);
        a.submit(2, None);
        assert_eq!(a.admit_next(), Some(1));
        assert_eq!(a.admit_next(), None, "flow 1 is still being loaded");
        a.started(1);
        assert_eq!(a.admit_next(), Some(2));
    }

    #[test]
    fn a_flow_submitted_twice_waits_once() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        a.submit(1, None);
        assert_eq!(a.waiting(), 1);
        assert_eq!(a.admit_next(), Some(1));
        a.submit(1, None);
        assert_eq!(a.waiting(), 0, "a starting flow is not queued again");
        a.started(1);
        a.submit(1, None);
        assert_eq!(a.waiting(), 0, "a running flow is not queued again");
    }

    #[test]
    fn a_flow_that_does_not_start_frees_its_slot() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        a.submit(2, None);
        assert_eq!(a.admit_next(), Some(1));
        a.not_started(1);
        assert_eq!(a.running(), 0);
        assert_eq!(a.admit_next(), Some(2));
    }

    #[test]
    fn the_second_flow_of_an_incremental_input_waits_until_the_first_ends() {
        let mut a = Admission::new(4, 3);
        a.submit(1, Some(10));
        a.submit(2, Some(10));
        a.submit(3, None);
        a.submit(4, Some(20));
        assert_eq!(start_all(&mut a), vec![1, 3, 4], "flow 2 keeps its place");
        assert_eq!(a.waiting(), 1);
        a.ended(3, true);
        assert_eq!(start_all(&mut a), Vec::<i64>::new(), "input 10 is still held");
        a.ended(1, true);
        assert_eq!(start_all(&mut a), vec![2]);
    }

    #[test]
    fn a_suspended_flow_no_longer_holds_its_input() {
        let mut a = Admission::new(4, 3);
        a.submit(1, Some(10));
        assert_eq!(start_all(&mut a), vec![1]);
        a.ended(1, false);
        a.submit(2, Some(10));
        // Flow 1 is no longer running, so the input is free again; its entry only matters
        // while it is starting, running or restarting.
        assert_eq!(start_all(&mut a), vec![2]);
    }

    #[test]
    fn an_input_is_held_while_its_flow_waits_to_restart() {
        let mut a = Admission::new(4, 3);
        a.submit(1, Some(10));
        assert_eq!(start_all(&mut a), vec![1]);
        a.submit(2, Some(10));
        assert!(matches!(a.crashed(1), CrashDecision::Restart { attempt: 1, .. }));
        assert_eq!(start_all(&mut a), Vec::<i64>::new(), "flow 1 will restart");
        assert!(a.restart_due(1));
        assert_eq!(start_all(&mut a), vec![1], "the restart goes first");
        a.ended(1, true);
        assert_eq!(start_all(&mut a), vec![2]);
    }

    #[test]
    fn crashes_restart_with_backoff_up_to_the_budget_then_give_up() {
        let mut a = Admission::new(1, 2);
        a.submit(1, None);
        assert_eq!(start_all(&mut a), vec![1]);
        assert_eq!(
            a.crashed(1),
            CrashDecision::Restart {
                attempt: 1,
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(a.running(), 0);
        assert!(a.restart_due(1));
        assert_eq!(start_all(&mut a), vec![1]);
        assert_eq!(
            a.crashed(1),
            CrashDecision::Restart {
                attempt: 2,
                delay: Duration::from_secs(1)
            }
        );
        assert!(a.restart_due(1));
        assert_eq!(start_all(&mut a), vec![1]);
        assert_eq!(a.crashed(1), CrashDecision::GiveUp { attempt: 3 });
        a.forget(1);
        assert_eq!(a.running(), 0);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn a_flow_that_ends_gets_a_fresh_restart_budget() {
        let mut a = Admission::new(1, 1);
        a.submit(1, None);
        start_all(&mut a);
        assert!(matches!(a.crashed(1), CrashDecision::Restart { attempt: 1, .. }));
        assert!(a.restart_due(1));
        start_all(&mut a);
        a.ended(1, false);
        a.submit(1, None);
        start_all(&mut a);
        assert!(matches!(a.crashed(1), CrashDecision::Restart { attempt: 1, .. }));
    }

    #[test]
    fn a_second_report_of_one_crash_is_ignored() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        start_all(&mut a);
        assert!(matches!(a.crashed(1), CrashDecision::Restart { attempt: 1, .. }));
        assert_eq!(a.crashed(1), CrashDecision::Duplicate);
        assert!(a.restart_due(1));
        assert!(!a.restart_due(1), "one restart per crash");
    }

    #[test]
    fn nothing_restarts_or_starts_once_parked() {
        let mut a = Admission::new(2, 3);
        a.submit(1, None);
        start_all(&mut a);
        a.submit(2, None);
        a.park();
        assert_eq!(a.admit_next(), None);
        assert_eq!(a.crashed(1), CrashDecision::GiveUp { attempt: 1 });
    }

    #[test]
    fn cancelling_a_waiting_flow_takes_it_out_of_the_queue() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        a.submit(2, Some(10));
        a.submit(3, None);
        start_all(&mut a);
        assert_eq!(a.cancel(2), CancelRoute::Idle);
        a.forget(2);
        assert_eq!(a.waiting(), 1);
        a.ended(1, true);
        assert_eq!(start_all(&mut a), vec![3]);
    }

    #[test]
    fn cancelling_a_flow_waiting_to_restart_stops_the_restart() {
        let mut a = Admission::new(1, 3);
        a.submit(1, Some(10));
        start_all(&mut a);
        a.crashed(1);
        assert_eq!(a.cancel(1), CancelRoute::Idle);
        a.forget(1);
        assert!(!a.restart_due(1));
        a.submit(2, Some(10));
        assert_eq!(start_all(&mut a), vec![2], "the input is free again");
    }

    #[test]
    fn a_cancel_while_starting_waits_for_the_actor() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        assert_eq!(a.admit_next(), Some(1));
        assert_eq!(a.cancel(1), CancelRoute::WhenStarted);
        assert_eq!(
            a.started(1),
            Started {
                cancel: true,
                lost: false,
                recovered: false
            }
        );
        assert_eq!(a.cancel(1), CancelRoute::Running);
    }

    #[test]
    fn a_cancel_of_a_running_flow_goes_to_its_actor_and_an_unknown_one_nowhere() {
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        start_all(&mut a);
        assert_eq!(a.cancel(1), CancelRoute::Running);
        assert_eq!(a.cancel(2), CancelRoute::Unknown);
        a.ended(1, true);
        assert_eq!(a.cancel(1), CancelRoute::Unknown);
    }

    #[test]
    fn a_crash_after_an_accepted_cancel_ends_the_flow_cancelled() {
        // The cancel went to the actor, which accepted it; its crash report comes first: the
        // flow ends CANCELLED instead of restarting (a restart would run what was stopped).
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        start_all(&mut a);
        assert_eq!(a.cancel(1), CancelRoute::Running);
        a.cancel_accepted(1);
        assert_eq!(a.crashed(1), CrashDecision::Cancelled);
        assert_eq!(a.cancel(1), CancelRoute::Unknown, "nothing left to cancel");
        // A cancel sent on start counts as accepted too.
        a.submit(2, None);
        assert_eq!(a.admit_next(), Some(2));
        assert_eq!(a.cancel(2), CancelRoute::WhenStarted);
        assert!(a.started(2).cancel);
        assert_eq!(a.crashed(2), CrashDecision::Cancelled);
    }

    #[test]
    fn a_crash_after_a_refused_cancel_restarts_the_flow() {
        // The route was Running but the actor did not accept (it was already ending): a
        // crash restarts the flow as any crash does.
        let mut a = Admission::new(1, 3);
        a.submit(1, None);
        start_all(&mut a);
        assert_eq!(a.cancel(1), CancelRoute::Running);
        assert!(matches!(a.crashed(1), CrashDecision::Restart { attempt: 1, .. }));
        assert_eq!(a.cancel(1), CancelRoute::Idle, "now it waits to restart");
    }

    #[test]
    fn a_recovered_flow_says_so_when_it_starts() {
        let mut a = Admission::new(2, 3);
        a.recover(1, None, true);
        a.recover(2, Some(10), false);
        a.recover(3, Some(10), true);
        assert_eq!(a.waiting(), 3);
        assert_eq!(a.admit_next(), Some(1));
        assert!(a.started(1).recovered);
        assert_eq!(a.admit_next(), Some(2));
        assert!(!a.started(2).recovered);
        assert_eq!(a.admit_next(), None);
        a.ended(2, true);
        a.ended(1, true);
        assert_eq!(a.admit_next(), Some(3));
        assert!(a.started(3).recovered);
    }
}
