//! Publishing a flow's outputs: each persist node stages its output; when the whole flow has
//! succeeded its loads are published together (one transaction for a database target), and
//! when it fails or is cancelled they are discarded — so a flow changes its target only if it
//! succeeds, and a failed or cancelled flow leaves every target exactly as it was.

use crate::connectors::{self, Load};
use crate::domain::spec::Output;
use crate::domain::store::DataStore;

/// The loads of a flow's outputs, keyed by flow and output so they survive restarts.
pub fn loads(flow_id: i64, outputs: &[Output]) -> Vec<Load> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| Load {
            table: o.table.clone(),
            mode: o.mode,
            key: format!("f{flow_id}_{i}"),
        })
        .collect()
}

/// Makes every staged load visible.
pub async fn publish(store: &DataStore, loads: &[Load]) -> Result<(), String> {
    let sink = connectors::sink_for(store).map_err(|e| e.message)?;
    sink.publish(loads).await.map_err(|e| e.message)
}

/// Removes whatever is staged for the loads.
pub async fn discard(store: &DataStore, loads: &[Load]) -> Result<(), String> {
    let sink = connectors::sink_for(store).map_err(|e| e.message)?;
    sink.discard(loads).await.map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::WriteMode;

    #[test]
    fn load_keys_are_unique_per_flow_and_output() {
        let outputs = vec![
            Output {
                node: "a".into(),
                table: "t1".into(),
                mode: WriteMode::Replace,
            },
            Output {
                node: "b".into(),
                table: "t2".into(),
                mode: WriteMode::Append,
            },
        ];
        let l = loads(7, &outputs);
        assert_eq!(l[0].key, "f7_0");
        assert_eq!(
            l[1],
            Load {
                table: "t2".into(),
                mode: WriteMode::Append,
                key: "f7_1".into()
            }
        );
    }
}
