//! Publishing a flow's outputs: each persist node stages its output; when the whole flow has
//! succeeded its loads are published together (one transaction for a database target), and
//! when it fails or is cancelled they are discarded — so a flow changes its target only if it
//! succeeds, and a failed or cancelled flow leaves every target exactly as it was.

use super::EngineError;
use crate::connectors::pools::Pools;
use crate::connectors::{self, Load};
use crate::domain::spec::Output;
use crate::domain::store::DataStore;

/// The loads of a flow's outputs, keyed by installation, flow and output so they survive
/// restarts and never collide with another server's.
pub fn loads(instance: &str, flow_id: i64, outputs: &[Output]) -> Vec<Load> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| Load {
            table: o.table.clone(),
            mode: o.mode,
            unique_key: o.unique_key.clone().unwrap_or_default(),
            key: format!("{instance}_f{flow_id}_{i}"),
        })
        .collect()
}

/// Makes every staged load visible; returns the sink's notes for the flow's log.
pub async fn publish(store: &DataStore, loads: &[Load], pools: &Pools) -> Result<Vec<String>, EngineError> {
    let sink = connectors::sink_for(store, pools)?;
    Ok(sink.publish(loads).await?)
}

/// Removes whatever is staged for the loads.
pub async fn discard(store: &DataStore, loads: &[Load], pools: &Pools) -> Result<(), EngineError> {
    let sink = connectors::sink_for(store, pools)?;
    Ok(sink.discard(loads).await?)
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
                unique_key: None,
                columns: vec![],
            },
            Output {
                node: "b".into(),
                table: "t2".into(),
                mode: WriteMode::Append,
                unique_key: None,
                columns: vec![],
            },
        ];
        let l = loads("0a1b2c3d", 7, &outputs);
        assert_eq!(l[0].key, "0a1b2c3d_f7_0");
        assert_eq!(
            l[1],
            Load {
                table: "t2".into(),
                mode: WriteMode::Append,
                unique_key: vec![],
                key: "0a1b2c3d_f7_1".into()
            }
        );
    }
}
