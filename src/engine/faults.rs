//! Fault injection for tests (cargo feature `fault-injection`, and only in debug builds: a
//! release build never has it).
//!
//! - `sluice_panic('message')` panics inside the engine when a query evaluates it — a panic in
//!   task work, as a bug in a connector or in DataFusion would cause.
//! - `sluice_sleep(ms)` sleeps `ms` milliseconds each time it is evaluated (once per batch) and
//!   returns true: slow, predictable nodes that do not load the CPU.
//! - A transform whose name starts with `fault_actor_panic` makes its FlowActor panic when the
//!   node completes (see `actors::flow`).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

pub fn register(ctx: &SessionContext) {
    let panic_fn = create_udf(
        "sluice_panic",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            let message = match args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(m)))) => m.clone(),
                _ => "injected fault".to_string(),
            };
            panic!("{message}");
        }),
    );
    ctx.register_udf(panic_fn);
    let sleep_fn = create_udf(
        "sluice_sleep",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            if let Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(ms)))) = args.first() {
                std::thread::sleep(std::time::Duration::from_millis((*ms).max(0) as u64));
            }
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        }),
    );
    ctx.register_udf(sleep_fn);
}

/// Whether a node's completion should make its FlowActor panic.
pub fn actor_should_panic(node: &str) -> bool {
    node.starts_with("fault_actor_panic")
}

/// Whether the process should die right after publishing a flow of input `input` (as a kill -9
/// would, before the final state is written): once per input and data directory (`work_root`
/// keeps the note), so the flow resumed by the next start completes.
pub fn abort_after_publish(input: &str, work_root: &std::path::Path) -> bool {
    if !input.starts_with("fault_abort_after_publish") {
        return false;
    }
    let note = work_root.join(format!("fault-aborted-{input}"));
    if note.exists() {
        return false;
    }
    std::fs::create_dir_all(work_root).is_ok() && std::fs::write(&note, b"").is_ok()
}
