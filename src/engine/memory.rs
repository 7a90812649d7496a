//! A flow's share of the engine's memory: a pool that enforces the flow's own limit and
//! forwards to the shared pool, so one flow can neither exceed its `memory_limit_mb` nor take
//! more than the service has.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::{resources_datafusion_err, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

#[derive(Debug)]
pub struct FlowMemoryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    /// Bytes this flow holds now; never above `limit`.
    used: AtomicUsize,
    flow_id: i64,
}

impl FlowMemoryPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize, flow_id: i64) -> Self {
        FlowMemoryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
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
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.shared.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used
            .fetch_sub(shrink.min(self.used.load(Ordering::SeqCst)), Ordering::SeqCst);
        self.shared.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut current = self.used.load(Ordering::SeqCst);
        loop {
            let next = current + additional;
            if next > self.limit {
                return Err(resources_datafusion_err!(
                    "the flow's memory limit of {} MB is reached (options.memory_limit_mb); raise it or reduce the data a single step holds",
                    self.limit / (1024 * 1024)
                ));
            }
            match self
                .used
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
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
        assert!(ra
            .try_grow(200)
            .unwrap_err()
            .to_string()
            .contains("memory limit of 0 MB"));
        rb.try_grow(550).unwrap_err();
        rb.try_grow(400).unwrap();
        assert_eq!(shared.reserved(), 900);
        ra.free();
        assert_eq!(a.reserved(), 0);
        rb.try_grow(100).unwrap();
    }
}
