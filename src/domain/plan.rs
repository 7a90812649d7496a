//! How a flow's DAG runs: which nodes are **materialized** (their result checkpointed in the
//! flow's work directory) and which are **inlined** into the one node that reads them, and the
//! **units** of work that follow from that. Pure rules; the engine executes units and the
//! FlowActor schedules them.
//!
//! The policy: a source or transform is materialized when it is scanned two or more times
//! (read by two nodes, or twice by one), or when the flow input marks it `materialize: true`.
//! Anything else is computed inside its reader: DataFusion plans the reader's query with the
//! inlined node's plan in place (projections and filters pushed through it, nothing written in
//! between), and a node whose only reader is an output streams straight into that output. The
//! trade-off: an inlined node has no checkpoint, so a restarted or retried flow recomputes it
//! from the nearest materialized inputs; `materialize: true` buys a resume point with one write
//! and one read of the node's result.

use std::collections::{HashMap, HashSet};

use super::checks::Check;
use super::dag::{Dag, NodeKind};
use super::spec::Transform;
use super::sql::count_scans;

/// Decides, for every ingest and transform node of `dag`, whether it is materialized, and
/// records the decision and its reason on the node. Persist and check nodes get neither. A
/// check reads its node like any other reader: a node read by a check and by anything else is
/// materialized, so the check reads the checkpoint instead of computing the node again.
pub fn plan_materialization(dag: &mut Dag, transforms: &[Transform], checks: &[Check]) {
    let marked: HashMap<&str, Option<bool>> = transforms
        .iter()
        .map(|t| (t.name.as_str(), t.materialize))
        .collect();
    // scans[node] = Σ over readers of how many times the reader scans it; readers[node] the
    // readers in declaration order.
    let mut scans: HashMap<String, u32> = HashMap::new();
    let mut readers: HashMap<String, Vec<String>> = HashMap::new();
    let sql: HashMap<&str, &str> = transforms
        .iter()
        .map(|t| (t.name.as_str(), t.sql.as_str()))
        .collect();
    let check_sql: HashMap<&str, String> = checks
        .iter()
        .map(|c| (c.name.as_str(), c.failing_rows_sql()))
        .collect();
    let mut persists: HashSet<String> = HashSet::new();
    for reader in &dag.nodes {
        if reader.kind == NodeKind::Persist {
            persists.insert(reader.name.clone());
        }
        let counts = match reader.kind {
            NodeKind::Transform => sql.get(reader.name.as_str()).map(|s| count_scans(s)),
            NodeKind::Check => check_sql.get(reader.name.as_str()).map(|s| count_scans(s)),
            _ => None,
        };
        for dep in &reader.depends_on {
            let n = counts
                .as_ref()
                .and_then(|c| c.get(dep).copied())
                .unwrap_or(1)
                .max(1);
            *scans.entry(dep.clone()).or_insert(0) += n;
            readers.entry(dep.clone()).or_default().push(reader.name.clone());
        }
    }
    for node in dag.nodes.iter_mut() {
        if matches!(node.kind, NodeKind::Persist | NodeKind::Check) {
            node.materialize = None;
            node.why = None;
            continue;
        }
        let scanned = scans.get(&node.name).copied().unwrap_or(0);
        let by = readers.get(&node.name).cloned().unwrap_or_default();
        let (materialize, why) = match marked.get(node.name.as_str()).copied().flatten() {
            Some(true) => (true, "marked materialize: true".to_string()),
            Some(false) if scanned >= 2 => (
                false,
                format!("marked materialize: false: each of its {scanned} scans recomputes it"),
            ),
            _ if by.len() >= 2 => (true, format!("read by {} nodes", by.len())),
            _ if scanned >= 2 => (true, format!("read {scanned} times by {}", by[0])),
            _ => match by.first() {
                Some(reader) if persists.contains(reader) => {
                    (false, format!("streamed into its output ({reader})"))
                }
                Some(reader) => (false, format!("inlined into {reader}")),
                None => (
                    false,
                    "read by nothing: run once, its result is not kept".to_string(),
                ),
            },
        };
        node.materialize = Some(materialize);
        node.why = Some(why);
    }
    cap_inline_depth(dag, &marked);
}

/// The most nodes inlined one into the next that one query holds. DataFusion's time to plan a
/// node grows with the depth of the plan beneath it (every level's projection is merged into
/// and pushed through the ones below), so a long chain of nodes read once each is cut: every
/// `MAX_INLINE_DEPTH + 1`-th node is materialized, and its readers start a new query from its
/// checkpoint. Real DAGs rarely chain this many models read once each; where one does, a
/// checkpoint every few dozen nodes costs less than planning the whole chain as one query.
pub const MAX_INLINE_DEPTH: usize = 16;

/// Materializes the node at which a chain of inlined nodes would grow deeper than
/// `MAX_INLINE_DEPTH` (unless the flow input marks it `materialize: false`).
fn cap_inline_depth(dag: &mut Dag, marked: &HashMap<&str, Option<bool>>) {
    // depth[node] = how many inlined nodes a reader of `node` would hold in its query through
    // it (0 for a materialized node).
    let mut depth: HashMap<String, usize> = HashMap::new();
    let order = dag.order.clone();
    for name in &order {
        let Some(node) = dag.nodes.iter_mut().find(|n| &n.name == name) else {
            continue;
        };
        if matches!(node.kind, NodeKind::Persist | NodeKind::Check) {
            continue;
        }
        let below = node
            .depends_on
            .iter()
            .filter_map(|d| depth.get(d))
            .max()
            .copied()
            .unwrap_or(0);
        let inlined = node.materialize == Some(false);
        let here = if !inlined {
            0
        } else if below >= MAX_INLINE_DEPTH && marked.get(name.as_str()).copied().flatten() != Some(false) {
            node.materialize = Some(true);
            node.why = Some(format!(
                "ends a chain of {} nodes inlined one into the next (longer chains cost more to plan than a checkpoint)",
                below + 1
            ));
            0
        } else {
            below + 1
        };
        depth.insert(name.clone(), here);
    }
}

/// What a unit of work ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// Compute a node and checkpoint its result.
    Materialize,
    /// Stage an output into its target.
    Persist,
    /// Compute a node nobody reads (its errors and row count still count).
    Discard,
    /// Run a check on the nodes it reads.
    Check,
}

/// One schedulable piece of a flow: its terminal node plus the nodes inlined into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The terminal node (a materialized node, a persist node, or a node nobody reads).
    pub name: String,
    pub kind: UnitKind,
    /// The non-materialized nodes computed inside this unit, every node after its inputs.
    pub inlined: Vec<String>,
    /// Units whose results this one reads (their terminal names).
    pub depends_on: Vec<String>,
}

impl Unit {
    /// Every DAG node this unit runs: the inlined ones, then the terminal.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.inlined
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.name.as_str()))
    }
}

/// The units of a flow, in an order where every unit comes after the units it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    pub units: Vec<Unit>,
}

impl RunPlan {
    /// Builds the units of a DAG whose materialization is planned (nodes without a decision
    /// count as materialized, which is always correct).
    pub fn new(dag: &Dag) -> RunPlan {
        let materialized = |name: &str| {
            dag.node(name)
                .map(|n| {
                    !matches!(n.kind, NodeKind::Persist | NodeKind::Check) && n.materialize.unwrap_or(true)
                })
                .unwrap_or(true)
        };
        let mut read: HashSet<&str> = HashSet::new();
        for n in &dag.nodes {
            read.extend(n.depends_on.iter().map(String::as_str));
        }
        let mut units = Vec::new();
        for node in dag.ordered_nodes() {
            let kind = match node.kind {
                NodeKind::Persist => UnitKind::Persist,
                NodeKind::Check => UnitKind::Check,
                _ if materialized(&node.name) => UnitKind::Materialize,
                _ if !read.contains(node.name.as_str()) => UnitKind::Discard,
                _ => continue,
            };
            // The inputs computed inside this unit: walk up through non-materialized nodes.
            let mut inlined = Vec::new();
            let mut depends_on = Vec::new();
            let mut seen = HashSet::new();
            let mut stack: Vec<&str> = match kind {
                UnitKind::Persist if !materialized(&node.depends_on[0]) => {
                    vec![node.depends_on[0].as_str()]
                }
                UnitKind::Persist => {
                    depends_on.push(node.depends_on[0].clone());
                    vec![]
                }
                _ => node.depends_on.iter().map(String::as_str).collect(),
            };
            while let Some(name) = stack.pop() {
                if !seen.insert(name) {
                    continue;
                }
                if materialized(name) {
                    depends_on.push(name.to_string());
                    continue;
                }
                inlined.push(name.to_string());
                if let Some(n) = dag.node(name) {
                    stack.extend(n.depends_on.iter().map(String::as_str));
                }
            }
            // Dependencies first, in the DAG's order.
            let position = |n: &str| dag.order.iter().position(|o| o == n).unwrap_or(usize::MAX);
            inlined.sort_by_key(|n| position(n));
            depends_on.sort_by_key(|n| position(n));
            depends_on.dedup();
            units.push(Unit {
                name: node.name.clone(),
                kind,
                inlined,
                depends_on,
            });
        }
        RunPlan { units }
    }

    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }

    /// The unit that computes DAG node `node` (as its terminal or inlined).
    pub fn unit_of(&self, node: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.nodes().any(|n| n == node))
    }

    /// The units as a DAG (for the scheduler): a unit depends on the units it reads.
    pub fn as_dag(&self) -> Dag {
        let nodes = self
            .units
            .iter()
            .map(|u| {
                let kind = match u.kind {
                    UnitKind::Persist => NodeKind::Persist,
                    UnitKind::Check => NodeKind::Check,
                    _ => NodeKind::Transform,
                };
                super::dag::DagNode::new(u.name.clone(), kind, u.depends_on.clone())
            })
            .collect();
        // Units are built in topological order, so this cannot find a cycle.
        Dag::build(nodes).unwrap_or_else(|_| Dag {
            nodes: vec![],
            order: vec![],
        })
    }

    /// The nodes an earlier run finished, from the units it finished: a unit is finished when
    /// `finished(unit)` says so (its checkpoint is valid, or its output staged), and then every
    /// node it computes is too.
    pub fn done_nodes(&self, finished: impl Fn(&Unit) -> bool) -> HashSet<String> {
        self.units
            .iter()
            .filter(|u| finished(u))
            .flat_map(|u| u.nodes().map(str::to_string))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dag::DagNode;

    fn t(name: &str, sql: &str) -> Transform {
        Transform {
            name: name.into(),
            sql: sql.into(),
            materialize: None,
        }
    }

    /// orders, customers → stg_orders (orders) → fct (stg_orders, customers, twice customers)
    /// → dim (fct), output fct and dim; lonely reads customers and nobody reads it.
    fn shop() -> (Dag, Vec<Transform>) {
        let transforms = vec![
            t("stg_orders", "SELECT * FROM orders"),
            t(
                "fct",
                "SELECT * FROM stg_orders o JOIN customers c ON o.c = c.id JOIN customers r ON o.r = r.id",
            ),
            t("dim", "SELECT * FROM fct"),
            t("lonely", "SELECT * FROM customers"),
        ];
        let dag = Dag::build(vec![
            DagNode::new("orders", NodeKind::Ingest, vec![]),
            DagNode::new("customers", NodeKind::Ingest, vec![]),
            DagNode::new("stg_orders", NodeKind::Transform, vec!["orders".into()]),
            DagNode::new(
                "fct",
                NodeKind::Transform,
                vec!["stg_orders".into(), "customers".into()],
            ),
            DagNode::new("dim", NodeKind::Transform, vec!["fct".into()]),
            DagNode::new("lonely", NodeKind::Transform, vec!["customers".into()]),
            DagNode::new("fct->fct", NodeKind::Persist, vec!["fct".into()]),
            DagNode::new("dim->dim", NodeKind::Persist, vec!["dim".into()]),
        ])
        .unwrap();
        (dag, transforms)
    }

    fn decision(dag: &Dag, name: &str) -> (Option<bool>, String) {
        let n = dag.node(name).unwrap();
        (n.materialize, n.why.clone().unwrap_or_default())
    }

    #[test]
    fn materializes_what_is_scanned_twice_and_inlines_the_rest() {
        let (mut dag, transforms) = shop();
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(
            decision(&dag, "orders"),
            (Some(false), "inlined into stg_orders".into())
        );
        assert_eq!(
            decision(&dag, "customers"),
            (Some(true), "read by 2 nodes".into())
        );
        assert_eq!(
            decision(&dag, "stg_orders"),
            (Some(false), "inlined into fct".into())
        );
        assert_eq!(decision(&dag, "fct"), (Some(true), "read by 2 nodes".into()));
        assert_eq!(
            decision(&dag, "dim"),
            (Some(false), "streamed into its output (dim->dim)".into())
        );
        assert_eq!(decision(&dag, "lonely").0, Some(false));
        assert_eq!(dag.node("fct->fct").unwrap().materialize, None);
    }

    #[test]
    fn two_scans_by_one_reader_and_marks_decide_too() {
        let (mut dag, mut transforms) = shop();
        transforms[3] = t("lonely", "SELECT 1");
        transforms[0].materialize = Some(true);
        transforms[1] = t("fct", "SELECT * FROM stg_orders a JOIN stg_orders b USING (id)");
        dag.nodes.iter_mut().find(|n| n.name == "fct").unwrap().depends_on = vec!["stg_orders".into()];
        dag.nodes
            .iter_mut()
            .find(|n| n.name == "lonely")
            .unwrap()
            .depends_on = vec![];
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(
            decision(&dag, "stg_orders"),
            (Some(true), "marked materialize: true".into())
        );
        transforms[0].materialize = None;
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(
            decision(&dag, "stg_orders"),
            (Some(true), "read 2 times by fct".into())
        );
        transforms[0].materialize = Some(false);
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(decision(&dag, "stg_orders").0, Some(false));
    }

    #[test]
    fn units_group_inlined_nodes_with_their_reader() {
        let (mut dag, transforms) = shop();
        plan_materialization(&mut dag, &transforms, &[]);
        let plan = RunPlan::new(&dag);
        let summary: Vec<(String, UnitKind, Vec<String>, Vec<String>)> = plan
            .units
            .iter()
            .map(|u| (u.name.clone(), u.kind, u.inlined.clone(), u.depends_on.clone()))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                ("customers".into(), UnitKind::Materialize, s(&[]), s(&[])),
                (
                    "fct".into(),
                    UnitKind::Materialize,
                    s(&["orders", "stg_orders"]),
                    s(&["customers"])
                ),
                ("lonely".into(), UnitKind::Discard, s(&[]), s(&["customers"])),
                ("fct->fct".into(), UnitKind::Persist, s(&[]), s(&["fct"])),
                ("dim->dim".into(), UnitKind::Persist, s(&["dim"]), s(&["fct"])),
            ]
        );
        assert_eq!(plan.unit_of("stg_orders").unwrap().name, "fct");
        assert_eq!(plan.unit_of("dim").unwrap().name, "dim->dim");
        let done = plan.done_nodes(|u| u.name == "fct" || u.name == "customers");
        let mut done: Vec<_> = done.into_iter().collect();
        done.sort();
        assert_eq!(done, ["customers", "fct", "orders", "stg_orders"]);
        let units = plan.as_dag();
        assert_eq!(units.node("dim->dim").unwrap().depends_on, ["fct"]);
    }

    #[test]
    fn a_check_is_a_reader_and_a_unit_of_its_own() {
        let (mut dag, transforms) = shop();
        // A check on dim (read by its output too) and one on lonely (read by nobody else).
        let mut nodes = dag.nodes.clone();
        nodes.push(DagNode::new(
            "unique(dim.id)",
            NodeKind::Check,
            vec!["dim".into()],
        ));
        nodes.push(DagNode::new(
            "row_count(lonely)",
            NodeKind::Check,
            vec!["lonely".into()],
        ));
        dag = Dag::build(nodes).unwrap();
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(decision(&dag, "dim"), (Some(true), "read by 2 nodes".into()));
        assert_eq!(
            decision(&dag, "lonely"),
            (Some(false), "inlined into row_count(lonely)".into())
        );
        assert_eq!(dag.node("unique(dim.id)").unwrap().materialize, None);
        let plan = RunPlan::new(&dag);
        let check = plan.unit("unique(dim.id)").unwrap();
        assert_eq!(
            (check.kind, check.depends_on.clone()),
            (UnitKind::Check, vec!["dim".to_string()])
        );
        assert!(check.inlined.is_empty());
        let count = plan.unit("row_count(lonely)").unwrap();
        assert_eq!(count.inlined, ["lonely"]);
        assert_eq!(count.depends_on, ["customers"]);
        assert!(plan.unit("lonely").is_none());
        assert_eq!(
            plan.as_dag().node("row_count(lonely)").unwrap().kind,
            NodeKind::Check
        );
    }

    #[test]
    fn a_long_chain_of_inlined_nodes_is_cut() {
        let n = 2 * MAX_INLINE_DEPTH + 5;
        let mut nodes = Vec::new();
        let mut transforms = Vec::new();
        for i in 0..n {
            let (sql, deps) = if i == 0 {
                ("SELECT 0 AS n".to_string(), vec![])
            } else {
                (
                    format!("SELECT n + 1 AS n FROM t{}", i - 1),
                    vec![format!("t{}", i - 1)],
                )
            };
            transforms.push(t(&format!("t{i}"), &sql));
            nodes.push(DagNode::new(format!("t{i}"), NodeKind::Transform, deps));
        }
        nodes.push(DagNode::new(
            "out",
            NodeKind::Persist,
            vec![format!("t{}", n - 1)],
        ));
        let mut dag = Dag::build(nodes).unwrap();
        plan_materialization(&mut dag, &transforms, &[]);
        let cut: Vec<usize> = (0..n)
            .filter(|i| dag.node(&format!("t{i}")).unwrap().materialize == Some(true))
            .collect();
        // t0..t15 inlined, t16 ends the chain; t17..t32 inlined, t33 ends the next.
        assert_eq!(cut, vec![MAX_INLINE_DEPTH, 2 * MAX_INLINE_DEPTH + 1]);
        let (_, why) = decision(&dag, &format!("t{MAX_INLINE_DEPTH}"));
        assert!(why.starts_with("ends a chain of 17 nodes inlined"), "{why}");
        let plan = RunPlan::new(&dag);
        assert!(plan.units.iter().all(|u| u.inlined.len() <= MAX_INLINE_DEPTH));
        assert_eq!(plan.units.len(), 3);

        // A node marked materialize: false is never cut.
        transforms[MAX_INLINE_DEPTH].materialize = Some(false);
        plan_materialization(&mut dag, &transforms, &[]);
        assert_eq!(decision(&dag, &format!("t{MAX_INLINE_DEPTH}")).0, Some(false));
        assert_eq!(
            decision(&dag, &format!("t{}", MAX_INLINE_DEPTH + 1)).0,
            Some(true)
        );
    }

    #[test]
    fn without_decisions_everything_is_materialized() {
        let (dag, _) = shop();
        let plan = RunPlan::new(&dag);
        assert!(plan.units.iter().all(|u| u.inlined.is_empty()));
        assert_eq!(plan.units.len(), 8);
    }
}
