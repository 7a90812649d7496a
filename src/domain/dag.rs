//! The DAG of a flow: nodes (ingest, transform, persist) with their dependencies, a topological
//! order, and `Scheduler`, the run-time bookkeeping of which node may run next.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::flow::TaskState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Ingest,
    Transform,
    Persist,
    /// A check on a node's result (see `domain::checks`).
    Check,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Ingest => "ingest",
            NodeKind::Transform => "transform",
            NodeKind::Persist => "persist",
            NodeKind::Check => "check",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagNode {
    pub name: String,
    pub kind: NodeKind,
    pub depends_on: Vec<String>,
    /// Ingest and transform nodes: whether the result is checkpointed in the flow's work
    /// directory (`true`) or computed inside the one node that reads it (see
    /// `domain::plan::plan_materialization`). Absent on persist nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materialize: Option<bool>,
    /// Why `materialize` is what it is, for people: `read by 3 nodes`, `inlined into fct_orders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl DagNode {
    /// A node whose materialization is not planned yet.
    pub fn new(name: impl Into<String>, kind: NodeKind, depends_on: Vec<String>) -> Self {
        DagNode {
            name: name.into(),
            kind,
            depends_on,
            materialize: None,
            why: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dag {
    /// In declaration order: sources, transforms, persists, checks.
    pub nodes: Vec<DagNode>,
    /// A topological order: every node after all it depends on; ingest nodes first.
    pub order: Vec<String>,
}

impl Dag {
    /// Orders `nodes` topologically. Dependencies on unknown names are ignored here (validation
    /// reports them). On a cycle, returns one cycle's path, its first node repeated at the end.
    pub fn build(nodes: Vec<DagNode>) -> Result<Dag, Vec<String>> {
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                n.depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        // Kahn's algorithm; among ready nodes the one declared first goes first, and ingest
        // nodes all precede the rest because they have no dependencies and are declared first.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..nodes.len()).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &j in &dependents[i] {
                remaining[j] -= 1;
                if remaining[j] == 0 {
                    ready.insert(j);
                }
            }
        }
        if order.len() < nodes.len() {
            let stuck: HashSet<usize> = (0..nodes.len()).filter(|i| remaining[*i] > 0).collect();
            return Err(find_cycle(&deps, &stuck)
                .into_iter()
                .map(|i| nodes[i].name.clone())
                .collect());
        }
        let order = order.into_iter().map(|i| nodes[i].name.clone()).collect();
        Ok(Dag { nodes, order })
    }

    pub fn node(&self, name: &str) -> Option<&DagNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes that depend on `name`, in declaration order.
    pub fn dependents<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a DagNode> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.depends_on.iter().any(|d| d == name))
    }

    /// The nodes in topological order.
    pub fn ordered_nodes(&self) -> impl Iterator<Item = &DagNode> {
        self.order.iter().filter_map(|name| self.node(name))
    }
}

/// Follows dependencies among `stuck` nodes until one repeats: that loop is a cycle.
fn find_cycle(deps: &[Vec<usize>], stuck: &HashSet<usize>) -> Vec<usize> {
    let Some(&start) = stuck.iter().min() else {
        return vec![];
    };
    let mut path = vec![start];
    let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut current = start;
    loop {
        let Some(&next) = deps[current].iter().filter(|d| stuck.contains(d)).min() else {
            return path;
        };
        if let Some(&pos) = seen.get(&next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        seen.insert(next, path.len());
        path.push(next);
        current = next;
    }
}

/// Run-time state of a DAG: which nodes are pending, running or done, what may start next.
/// Pure bookkeeping; the FlowActor does the messaging.
#[derive(Debug, Clone)]
pub struct Scheduler {
    names: Vec<String>,
    states: Vec<TaskState>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    max_parallel: usize,
}

impl Scheduler {
    /// `done` lists nodes already completed (checkpointed by an earlier run of the flow).
    pub fn new(dag: &Dag, max_parallel: usize, done: &HashSet<String>) -> Self {
        let names: Vec<String> = dag.order.clone();
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let deps: Vec<Vec<usize>> = names
            .iter()
            .map(|n| {
                dag.node(n)
                    .map(|node| {
                        node.depends_on
                            .iter()
                            .filter_map(|d| index.get(d.as_str()).copied())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut dependents = vec![Vec::new(); names.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let states = names
            .iter()
            .map(|n| {
                if done.contains(n) {
                    TaskState::Completed
                } else {
                    TaskState::Pending
                }
            })
            .collect();
        Scheduler {
            names,
            states,
            deps,
            dependents,
            max_parallel: max_parallel.max(1),
        }
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn running(&self) -> usize {
        self.states.iter().filter(|s| **s == TaskState::Running).count()
    }

    /// Marks as RUNNING and returns the nodes that may start now: pending, every dependency
    /// completed, within the parallelism limit, in topological order.
    pub fn start_ready(&mut self) -> Vec<usize> {
        let mut free = self.max_parallel.saturating_sub(self.running());
        let mut started = Vec::new();
        for i in 0..self.names.len() {
            if free == 0 {
                break;
            }
            if self.states[i] == TaskState::Pending
                && self.deps[i]
                    .iter()
                    .all(|&d| self.states[d] == TaskState::Completed)
            {
                self.states[i] = TaskState::Running;
                started.push(i);
                free -= 1;
            }
        }
        started
    }

    pub fn complete(&mut self, i: usize) {
        self.states[i] = TaskState::Completed;
    }

    /// Marks `i` failed and every node downstream of it skipped; returns the skipped ones.
    pub fn fail(&mut self, i: usize) -> Vec<usize> {
        self.states[i] = TaskState::Failed;
        let mut skipped = Vec::new();
        let mut stack = self.dependents[i].clone();
        while let Some(j) = stack.pop() {
            if self.states[j] == TaskState::Pending {
                self.states[j] = TaskState::Skipped;
                skipped.push(j);
                stack.extend(self.dependents[j].iter().copied());
            }
        }
        skipped.sort_unstable();
        skipped
    }

    /// Marks a running node cancelled.
    pub fn cancel(&mut self, i: usize) {
        self.states[i] = TaskState::Cancelled;
    }

    /// Marks every pending node cancelled and returns them.
    pub fn cancel_pending(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.states.iter_mut().enumerate() {
            if *s == TaskState::Pending {
                *s = TaskState::Cancelled;
                out.push(i);
            }
        }
        out
    }

    /// No node is pending or running.
    pub fn is_finished(&self) -> bool {
        self.states.iter().all(|s| s.is_final())
    }

    pub fn any_failed(&self) -> bool {
        self.states.contains(&TaskState::Failed)
    }

    pub fn all_completed(&self) -> bool {
        self.states.iter().all(|s| *s == TaskState::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeKind, deps: &[&str]) -> DagNode {
        DagNode::new(name, kind, deps.iter().map(|d| d.to_string()).collect())
    }

    fn sample() -> Dag {
        Dag::build(vec![
            node("orders", NodeKind::Ingest, &[]),
            node("customers", NodeKind::Ingest, &[]),
            node("totals", NodeKind::Transform, &["customers", "stg"]),
            node("stg", NodeKind::Transform, &["orders"]),
            node("other", NodeKind::Transform, &["customers"]),
            node("totals->t", NodeKind::Persist, &["totals"]),
        ])
        .unwrap()
    }

    #[test]
    fn topological_order_puts_ingest_first_and_dependencies_before_dependents() {
        let dag = sample();
        assert_eq!(
            dag.order,
            ["orders", "customers", "stg", "totals", "other", "totals->t"]
        );
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let err = Dag::build(vec![
            node("src", NodeKind::Ingest, &[]),
            node("a", NodeKind::Transform, &["src", "c"]),
            node("b", NodeKind::Transform, &["a"]),
            node("c", NodeKind::Transform, &["b"]),
            node("d", NodeKind::Transform, &["c"]),
        ])
        .unwrap_err();
        assert_eq!(err, ["a", "c", "b", "a"]);
        let err = Dag::build(vec![node("a", NodeKind::Transform, &["a"])]).unwrap_err();
        assert_eq!(err, ["a", "a"]);
    }

    #[test]
    fn scheduler_respects_dependencies_and_parallelism() {
        let dag = sample();
        let mut s = Scheduler::new(&dag, 2, &HashSet::new());
        let names =
            |s: &Scheduler, v: Vec<usize>| v.into_iter().map(|i| s.name(i).to_string()).collect::<Vec<_>>();
        let first = s.start_ready();
        assert_eq!(names(&s, first.clone()), ["orders", "customers"]);
        assert!(s.start_ready().is_empty());
        s.complete(first[1]);
        let next = s.start_ready();
        assert_eq!(names(&s, next), ["other"]);
        s.complete(first[0]);
        assert_eq!(names(&s, s.clone().start_ready()), ["stg"]);
    }

    #[test]
    fn a_failure_skips_everything_downstream_only() {
        let dag = sample();
        let mut s = Scheduler::new(&dag, 8, &HashSet::new());
        s.start_ready();
        let stg = s.index_of("orders").unwrap();
        let skipped: Vec<_> = s.fail(stg).into_iter().map(|i| s.name(i).to_string()).collect();
        assert_eq!(skipped, ["stg", "totals", "totals->t"]);
        s.complete(s.index_of("customers").unwrap());
        let next: Vec<_> = s
            .start_ready()
            .into_iter()
            .map(|i| s.name(i).to_string())
            .collect();
        assert_eq!(next, ["other"]);
        s.complete(s.index_of("other").unwrap());
        assert!(s.is_finished());
        assert!(s.any_failed());
    }

    #[test]
    fn resumes_with_completed_nodes() {
        let dag = sample();
        let done: HashSet<String> = ["orders", "customers", "stg"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut s = Scheduler::new(&dag, 8, &done);
        let next: Vec<_> = s
            .start_ready()
            .into_iter()
            .map(|i| s.name(i).to_string())
            .collect();
        assert_eq!(next, ["totals", "other"]);
    }
}
