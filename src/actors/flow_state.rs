//! A FlowActor's run state machine, without actix: the phase a flow is in (starting, running,
//! stopping for a reason, ending), what a cancel, a suspend, a timeout, a failed task or a
//! crash does in each phase, when the flow ends, and which final state it ends in. The actor
//! asks it before it acts and does the messaging and IO the answer calls for.
//!
//! ```text
//! Starting ──session ready──▶ Running ──all units done──────────────▶ Ending (COMPLETED or FAILED)
//!     │                          │
//!     └──cancel, suspend─────────┴──cancel, suspend, timeout, fail_fast──▶ Stopping(reason)
//!                                                                            │ tasks idle, or grace over
//!                                                                            ▼
//!                                      Ending (CANCELLED, FAILED, or suspended: no final state)
//! ```
//! A crash (a task's work panicked) goes to Ending from any phase, with no final state: the
//! supervisor restarts the flow.

use crate::domain::flow::FlowState;

/// Where a flow's run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Setting up the session (registering checkpoints).
    Starting,
    Running,
    /// Stopping because of a cancel, a failure with `fail_fast`, a timeout or a suspend.
    Stopping(StopReason),
    /// The end is being written; nothing else happens.
    Ending,
}

/// Why a flow stops before all its units are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Failed,
    /// Graceful shutdown: leave the flow RUNNING for the next process to resume.
    Suspended,
}

/// How a flow ends, once [`RunState::end`] has decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Suspended for shutdown: no final state, everything kept for the next start.
    Suspend,
    /// Publish (COMPLETED) or discard the staged outputs, then write this state.
    Final(FlowState),
}

/// What a cancel request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// The flow stops now (it is `Stopping(Cancelled)`): cancel its work.
    Stop,
    /// The flow is already stopping because of a cancel.
    AlreadyCancelling,
    /// Too late: the flow is already ending, or stopping for another reason, in this state
    /// (RUNNING when it is being suspended).
    Refused(FlowState),
}

/// The run state of one flow.
#[derive(Debug)]
pub struct RunState {
    phase: Phase,
    /// The final state being written, once `end` has decided it.
    final_state: Option<FlowState>,
    /// Set once the supervisor has been told how the flow ended (or that it crashed or was
    /// suspended); until then, the actor's drop reports a crash.
    reported: bool,
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}

impl RunState {
    /// A flow whose session is being set up.
    pub fn new() -> Self {
        RunState {
            phase: Phase::Starting,
            final_state: None,
            reported: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether units may start.
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The session is ready: a starting flow runs. False when it left `Starting` meanwhile
    /// (then nothing more is to be done with the session).
    pub fn session_ready(&mut self) -> bool {
        if self.phase != Phase::Starting {
            return false;
        }
        self.phase = Phase::Running;
        true
    }

    /// Begins stopping for `reason`. False when the flow is already stopping or ending.
    pub fn stop(&mut self, reason: StopReason) -> bool {
        if matches!(self.phase, Phase::Stopping(_) | Phase::Ending) {
            return false;
        }
        self.phase = Phase::Stopping(reason);
        true
    }

    /// A cancel request: a starting or running flow stops; a flow stopping or ending for
    /// another reason says how it ends.
    pub fn cancel(&mut self) -> CancelDecision {
        match self.phase {
            Phase::Starting | Phase::Running => {
                self.stop(StopReason::Cancelled);
                CancelDecision::Stop
            }
            Phase::Stopping(StopReason::Cancelled) => CancelDecision::AlreadyCancelling,
            Phase::Stopping(StopReason::Failed) => CancelDecision::Refused(FlowState::Failed),
            Phase::Stopping(StopReason::Suspended) => CancelDecision::Refused(FlowState::Running),
            Phase::Ending => CancelDecision::Refused(self.final_state.unwrap_or(FlowState::Running)),
        }
    }

    /// Shutdown: a starting or running flow stops without a final state. False otherwise.
    pub fn suspend(&mut self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running) && self.stop(StopReason::Suspended)
    }

    /// `options.flow_timeout_s` passed: a running flow stops and fails. False otherwise.
    pub fn time_out(&mut self) -> bool {
        self.is_running() && self.stop(StopReason::Failed)
    }

    /// A unit failed: with `fail_fast`, a running flow stops and fails (true); otherwise the
    /// independent branches go on.
    pub fn unit_failed(&mut self, fail_fast: bool) -> bool {
        fail_fast && self.is_running() && self.stop(StopReason::Failed)
    }

    /// Whether the flow ends now: a running one when every unit has finished (`finished`), a
    /// stopping one once no task runs (`idle`).
    pub fn should_end(&self, idle: bool, finished: bool) -> bool {
        match self.phase {
            Phase::Running => finished,
            Phase::Stopping(_) => idle,
            Phase::Starting | Phase::Ending => false,
        }
    }

    /// The grace period after a stop is over: a flow still stopping ends without the tasks
    /// that did not stop.
    pub fn grace_over(&self) -> bool {
        matches!(self.phase, Phase::Stopping(_))
    }

    /// Ends the flow (`all_completed`: every unit completed). `None` when it is already
    /// ending.
    pub fn end(&mut self, all_completed: bool) -> Option<End> {
        let state = match self.phase {
            Phase::Ending => return None,
            Phase::Stopping(StopReason::Suspended) => None,
            Phase::Stopping(StopReason::Cancelled) => Some(FlowState::Cancelled),
            Phase::Stopping(StopReason::Failed) => Some(FlowState::Failed),
            Phase::Starting | Phase::Running if all_completed => Some(FlowState::Completed),
            Phase::Starting | Phase::Running => Some(FlowState::Failed),
        };
        self.phase = Phase::Ending;
        self.final_state = state;
        Some(state.map_or(End::Suspend, End::Final))
    }

    /// The outputs of a flow ending in `intended` were published or discarded (`ok`), or that
    /// failed: the state the flow really ends in. A COMPLETED flow whose publish failed is
    /// FAILED; a failed discard does not change the state.
    pub fn settle(&mut self, intended: FlowState, ok: bool) -> FlowState {
        let state = match intended {
            FlowState::Completed if !ok => FlowState::Failed,
            other => other,
        };
        self.final_state = Some(state);
        state
    }

    /// The flow's execution crashed (a task's work panicked): it ends with no final state; the
    /// supervisor, told of the crash, restarts it.
    pub fn crashed(&mut self) {
        self.phase = Phase::Ending;
        self.reported = true;
    }

    /// The supervisor has been told how the flow ended (or of a crash).
    pub fn reported(&mut self) {
        self.reported = true;
    }

    /// Whether the actor, stopping now, must report a crash: it never told the supervisor
    /// how the flow ended.
    pub fn must_report_crash(&self) -> bool {
        !self.reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase; 6] = [
        Phase::Starting,
        Phase::Running,
        Phase::Stopping(StopReason::Cancelled),
        Phase::Stopping(StopReason::Failed),
        Phase::Stopping(StopReason::Suspended),
        Phase::Ending,
    ];

    /// A run state in `phase` (an ending one that ends FAILED).
    fn in_phase(phase: Phase) -> RunState {
        let mut run = RunState::new();
        match phase {
            Phase::Starting => {}
            Phase::Running => assert!(run.session_ready()),
            Phase::Stopping(reason) => {
                assert!(run.session_ready());
                assert!(run.stop(reason));
            }
            Phase::Ending => {
                assert!(run.session_ready());
                assert_eq!(run.end(false), Some(End::Final(FlowState::Failed)));
            }
        }
        assert_eq!(run.phase(), phase);
        run
    }

    #[test]
    fn a_flow_runs_once_its_session_is_ready() {
        let mut run = RunState::new();
        assert!(!run.is_running());
        assert!(run.session_ready());
        assert!(run.is_running());
        assert!(!run.session_ready(), "only once");
    }

    #[test]
    fn a_session_ready_after_a_cancel_is_not_used() {
        let mut run = RunState::new();
        assert_eq!(run.cancel(), CancelDecision::Stop);
        assert!(!run.session_ready());
        assert_eq!(run.phase(), Phase::Stopping(StopReason::Cancelled));
    }

    #[test]
    fn a_cancel_in_each_phase() {
        let expected = [
            (Phase::Starting, CancelDecision::Stop),
            (Phase::Running, CancelDecision::Stop),
            (
                Phase::Stopping(StopReason::Cancelled),
                CancelDecision::AlreadyCancelling,
            ),
            (
                Phase::Stopping(StopReason::Failed),
                CancelDecision::Refused(FlowState::Failed),
            ),
            (
                Phase::Stopping(StopReason::Suspended),
                CancelDecision::Refused(FlowState::Running),
            ),
            (Phase::Ending, CancelDecision::Refused(FlowState::Failed)),
        ];
        for (phase, decision) in expected {
            let mut run = in_phase(phase);
            assert_eq!(run.cancel(), decision, "in {phase:?}");
            let after = match decision {
                CancelDecision::Stop => Phase::Stopping(StopReason::Cancelled),
                _ => phase,
            };
            assert_eq!(run.phase(), after, "after a cancel in {phase:?}");
        }
    }

    #[test]
    fn a_cancelled_flow_ends_cancelled_once_its_tasks_stop() {
        let mut run = in_phase(Phase::Running);
        assert_eq!(run.cancel(), CancelDecision::Stop);
        assert!(!run.should_end(false, false), "a task still runs");
        assert!(run.should_end(true, false));
        assert_eq!(run.end(false), Some(End::Final(FlowState::Cancelled)));
        assert_eq!(run.cancel(), CancelDecision::Refused(FlowState::Cancelled));
    }

    #[test]
    fn a_cancel_of_a_crashed_flow_is_refused_as_running() {
        let mut run = in_phase(Phase::Running);
        run.crashed();
        assert_eq!(run.cancel(), CancelDecision::Refused(FlowState::Running));
    }

    #[test]
    fn a_failed_task_in_each_phase() {
        for phase in PHASES {
            let mut run = in_phase(phase);
            assert!(
                !run.unit_failed(false),
                "without fail_fast nothing stops, in {phase:?}"
            );
            assert_eq!(run.phase(), phase);
            let stops = run.unit_failed(true);
            assert_eq!(stops, phase == Phase::Running, "fail_fast in {phase:?}");
            let after = if stops {
                Phase::Stopping(StopReason::Failed)
            } else {
                phase
            };
            assert_eq!(run.phase(), after, "after a failed task in {phase:?}");
        }
    }

    #[test]
    fn a_finished_task_in_each_phase() {
        // (idle, every unit finished) → whether the flow ends.
        for phase in PHASES {
            let run = in_phase(phase);
            let ends: Vec<bool> = [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .map(|(idle, finished)| run.should_end(idle, finished))
                .collect();
            let expected = match phase {
                Phase::Running => vec![false, false, true, true],
                Phase::Stopping(_) => vec![false, true, false, true],
                Phase::Starting | Phase::Ending => vec![false; 4],
            };
            assert_eq!(ends, expected, "in {phase:?}");
        }
    }

    #[test]
    fn a_crash_in_each_phase_ends_the_flow_without_a_final_state() {
        for phase in PHASES {
            let mut run = in_phase(phase);
            run.crashed();
            assert_eq!(run.phase(), Phase::Ending, "after a crash in {phase:?}");
            assert_eq!(run.end(true), None, "nothing more ends, in {phase:?}");
            assert!(!run.must_report_crash(), "the crash is reported, in {phase:?}");
            assert!(!run.suspend());
            assert!(!run.time_out());
        }
    }

    #[test]
    fn the_final_state_of_each_phase() {
        let expected = [
            (Phase::Running, true, Some(End::Final(FlowState::Completed))),
            (Phase::Running, false, Some(End::Final(FlowState::Failed))),
            (Phase::Starting, false, Some(End::Final(FlowState::Failed))),
            (
                Phase::Stopping(StopReason::Cancelled),
                true,
                Some(End::Final(FlowState::Cancelled)),
            ),
            (
                Phase::Stopping(StopReason::Failed),
                true,
                Some(End::Final(FlowState::Failed)),
            ),
            (Phase::Stopping(StopReason::Suspended), true, Some(End::Suspend)),
            (Phase::Ending, true, None),
        ];
        for (phase, all_completed, end) in expected {
            let mut run = in_phase(phase);
            assert_eq!(run.end(all_completed), end, "in {phase:?}");
            assert_eq!(run.phase(), Phase::Ending);
            assert_eq!(run.end(all_completed), None, "a flow ends once");
        }
    }

    #[test]
    fn a_stop_happens_once() {
        let mut run = in_phase(Phase::Running);
        assert!(run.stop(StopReason::Failed));
        assert!(!run.stop(StopReason::Cancelled));
        assert_eq!(run.phase(), Phase::Stopping(StopReason::Failed));
        assert!(run.grace_over());
        run.end(false);
        assert!(!run.grace_over(), "an ending flow has nothing left to wait for");
    }

    #[test]
    fn suspend_and_timeout_stop_only_a_flow_that_has_not_stopped() {
        for phase in PHASES {
            let mut run = in_phase(phase);
            let suspends = run.suspend();
            assert_eq!(
                suspends,
                matches!(phase, Phase::Starting | Phase::Running),
                "{phase:?}"
            );
            let mut run = in_phase(phase);
            assert_eq!(run.time_out(), phase == Phase::Running, "{phase:?}");
        }
        let mut run = in_phase(Phase::Running);
        assert!(run.time_out());
        assert_eq!(run.end(true), Some(End::Final(FlowState::Failed)));
    }

    #[test]
    fn a_failed_publish_fails_a_completed_flow_and_a_failed_discard_changes_nothing() {
        let mut run = in_phase(Phase::Running);
        assert_eq!(run.end(true), Some(End::Final(FlowState::Completed)));
        assert_eq!(run.settle(FlowState::Completed, false), FlowState::Failed);
        assert_eq!(run.cancel(), CancelDecision::Refused(FlowState::Failed));
        assert_eq!(run.settle(FlowState::Completed, true), FlowState::Completed);
        assert_eq!(run.settle(FlowState::Cancelled, false), FlowState::Cancelled);
        assert_eq!(run.settle(FlowState::Failed, true), FlowState::Failed);
    }

    #[test]
    fn a_flow_that_never_reported_must_report_a_crash() {
        let mut run = in_phase(Phase::Running);
        assert!(run.must_report_crash());
        run.reported();
        assert!(!run.must_report_crash());
    }
}
