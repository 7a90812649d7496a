//! Yield points after joins, so a cancel (or any other task on the engine's threads) never
//! waits for a join that multiplies its input.
//!
//! A query stream gives its thread back to tokio only when some stream below it answers
//! `Pending`. DataFusion's own yield points (`EnsureCooperative`) sit at its leaves and
//! exchanges, which spend tokio's task budget once per batch they produce; an operator that
//! emits many batches per input batch spends none meanwhile. A cross join emits one batch per
//! build-side row for every probe batch: `range(300000) CROSS JOIN range(300000)` kept both
//! engine threads inside one poll for seconds at a time in a debug build, so the flow's
//! cancel, and the discard of what it staged, waited for the join instead of ending it.
//!
//! [`YieldAfterJoins`], the last physical optimizer rule, puts DataFusion's
//! [`CooperativeExec`] above every operator with more than one input (the joins, and unions)
//! and every `UnnestExec`: each batch they emit spends budget, so the task yields after
//! tokio's budget of batches, and a cancelled task is dropped there. The cost is one budget
//! check per batch.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug, Default)]
pub struct YieldAfterJoins;

/// Whether `plan` may emit many batches for one batch of its input.
fn multiplies(plan: &dyn ExecutionPlan) -> bool {
    plan.children().len() > 1 || plan.name() == "UnnestExec"
}

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if multiplies(node.as_ref()) {
                return Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ));
            }
            // A plan optimized twice keeps one yield point per operator.
            if node.name() == "CooperativeExec" {
                if let [only] = node.children().as_slice() {
                    if only.name() == "CooperativeExec" {
                        return Ok(Transformed::yes(Arc::clone(only)));
                    }
                }
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sluice_yield_after_joins"
    }

    /// Wrapping changes no schema.
    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use futures::StreamExt;

    use super::*;

    fn context(with_rule: bool) -> SessionContext {
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(1))
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(YieldAfterJoins));
        }
        SessionContext::new_with_state(state.build())
    }

    /// How many batches the cross join's stream gives before its first `Pending` (at most
    /// `cap`), polled in a task of a tokio runtime, where tokio keeps a budget.
    async fn batches_before_pending(ctx: SessionContext, cap: usize) -> usize {
        let sql = "SELECT r1.value AS a, r2.value AS b FROM range(5000) r1 CROSS JOIN range(5000) r2";
        tokio::spawn(async move {
            let mut stream = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
            let mut batches = 0;
            poll_fn(|cx| loop {
                match stream.poll_next_unpin(cx) {
                    Poll::Ready(Some(batch)) => {
                        batch.unwrap();
                        batches += 1;
                        if batches >= cap {
                            return Poll::Ready(batches);
                        }
                    }
                    Poll::Ready(None) | Poll::Pending => return Poll::Ready(batches),
                }
            })
            .await
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_cross_join_yields_within_tokios_budget() {
        // Without the rule the join emits batch after batch (one per build row) in one poll.
        assert_eq!(batches_before_pending(context(false), 2000).await, 2000);
        let yielded = batches_before_pending(context(true), 2000).await;
        assert!(yielded <= 256, "{yielded} batches before the first yield");
    }

    #[tokio::test]
    async fn every_join_gets_one_yield_point_even_when_optimized_twice() {
        let ctx = context(true);
        let plan = ctx
            .sql("SELECT count(*) FROM range(10) a JOIN range(10) b ON a.value = b.value CROSS JOIN range(3) c")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = |plan: &Arc<dyn ExecutionPlan>| displayable(plan.as_ref()).indent(false).to_string();
        let once = text(&plan);
        let twice = text(&YieldAfterJoins.optimize(plan, &ConfigOptions::default()).unwrap());
        assert_eq!(once, twice, "a second pass changes nothing");
        let lines: Vec<&str> = once.lines().map(str::trim).collect();
        let joins: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("HashJoinExec") || lines[i].starts_with("CrossJoinExec"))
            .collect();
        assert_eq!(joins.len(), 2, "{once}");
        for i in joins {
            assert!(
                i > 0 && lines[i - 1].starts_with("CooperativeExec"),
                "no yield point above {}:\n{once}",
                lines[i]
            );
            assert!(
                i < 2 || !lines[i - 2].starts_with("CooperativeExec"),
                "two yield points above {}:\n{once}",
                lines[i]
            );
        }
    }
}
