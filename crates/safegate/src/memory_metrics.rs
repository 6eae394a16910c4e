//! Memory metrics for the technician's dashboard: what the allocator (jemalloc) holds,
//! read at scrape time, so a slow growth over weeks shows before it hurts.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// `safegate_memory_bytes{kind=...}`: jemalloc's own counters, refreshed on each scrape.
pub struct MemoryCollector {
    bytes: IntGaugeVec,
}

impl MemoryCollector {
    /// The collector; fails only if the metric's description is invalid.
    pub fn new() -> prometheus::Result<Self> {
        let bytes = IntGaugeVec::new(
            Opts::new(
                "safegate_memory_bytes",
                "Memory held through SafeGate's allocator (jemalloc), by kind: \
                 allocated = in use by SafeGate's data; active = in pages holding it; \
                 resident = in physical memory, including freed memory not yet returned \
                 to the system; metadata = the allocator's own bookkeeping; retained = \
                 address space kept for reuse (not resident). Compare with \
                 process_resident_memory_bytes.",
            ),
            &["kind"],
        )?;
        Ok(Self { bytes })
    }

    /// Reads jemalloc's counters; a failed read leaves that kind at its last value.
    fn refresh(&self) {
        if tikv_jemalloc_ctl::epoch::advance().is_err() {
            return;
        }
        let kinds: [(&str, tikv_jemalloc_ctl::Result<usize>); 5] = [
            ("allocated", tikv_jemalloc_ctl::stats::allocated::read()),
            ("active", tikv_jemalloc_ctl::stats::active::read()),
            ("resident", tikv_jemalloc_ctl::stats::resident::read()),
            ("metadata", tikv_jemalloc_ctl::stats::metadata::read()),
            ("retained", tikv_jemalloc_ctl::stats::retained::read()),
        ];
        for (kind, value) in kinds {
            if let Ok(value) = value {
                self.bytes
                    .with_label_values(&[kind])
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}

impl Collector for MemoryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.bytes.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.bytes.collect()
    }
}
