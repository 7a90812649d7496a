//! A flow's share of the engine's memory: a pool of `memory_limit_mb` shared fairly by the
//! flow's own operators (DataFusion's `FairSpillPool`: every operator that can spill gets an
//! equal share, so one hash table cannot starve a sort), counted against the service's shared
//! pool too, so all flows together never take more than the service has. Its errors name the
//! flow's limit and the operators holding the most.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::common::{resources_datafusion_err, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

#[derive(Debug)]
pub struct FlowMemoryPool {
    own: TrackConsumersPool<FairSpillPool>,
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    flow_id: i64,
}

impl FlowMemoryPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize, flow_id: i64) -> Self {
        FlowMemoryPool {
            own: TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::MIN.saturating_add(2)),
            shared,
            limit,
            flow_id,
        }
    }
}

impl std::fmt::Display for FlowMemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flow {} memory pool ({} bytes)", self.flow_id, self.limit)
    }
}

impl MemoryPool for FlowMemoryPool {
    fn name(&self) -> &str {
        "sluice-flow"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.own.register(consumer);
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.own.unregister(consumer);
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.own.grow(reservation, additional);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.own.shrink(reservation, shrink);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if let Err(e) = self.own.try_grow(reservation, additional) {
            return Err(resources_datafusion_err!(
                "the flow's memory limit of {} MB is reached (options.memory_limit_mb; raise it, or make one step hold less): {}",
                self.limit / (1024 * 1024),
                crate::connectors::error::clean_message(&e)
            ));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.own.shrink(reservation, additional);
            return Err(resources_datafusion_err!(
                "the server's memory for all running flows (engine.memory_limit_mb) is in use: {}",
                crate::connectors::error::clean_message(&e)
            ));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.own.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn enforces_the_flow_limit_and_the_shared_one() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a: Arc<dyn MemoryPool> = Arc::new(FlowMemoryPool::new(shared.clone(), 600, 1));
        let b: Arc<dyn MemoryPool> = Arc::new(FlowMemoryPool::new(shared.clone(), 600, 2));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(500).unwrap();
        let err = ra.try_grow(200).unwrap_err().to_string();
        assert!(err.contains("memory limit of 0 MB"), "{err}");
        assert!(err.contains("a#"), "names the consumers: {err}");
        let err = rb.try_grow(550).unwrap_err().to_string();
        assert!(err.contains("engine.memory_limit_mb"), "{err}");
        assert_eq!(b.reserved(), 0, "a refused share is given back");
        rb.try_grow(400).unwrap();
        assert_eq!(shared.reserved(), 900);
        ra.free();
        assert_eq!(a.reserved(), 0);
        rb.try_grow(100).unwrap();
    }

    #[test]
    fn spilling_operators_of_one_flow_share_its_limit_fairly() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(10_000));
        let pool: Arc<dyn MemoryPool> = Arc::new(FlowMemoryPool::new(shared, 1000, 1));
        let sort = MemoryConsumer::new("sort").with_can_spill(true).register(&pool);
        let agg = MemoryConsumer::new("agg").with_can_spill(true).register(&pool);
        // Two spilling operators: each may hold half.
        sort.try_grow(500).unwrap();
        assert!(
            sort.try_grow(1).is_err(),
            "the sort must spill, not take the aggregate's share"
        );
        agg.try_grow(500).unwrap();
    }
}
