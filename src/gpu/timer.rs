//! Per-kernel GPU time from timestamp queries (when the adapter has `timestamp-query`).
//!
//! Each timed span is one compute pass with a timestamp written at its beginning and end;
//! after the submit the query set is resolved into a buffer and read back.

use super::device::{Gpu, GpuError};

/// wgpu caps a query set at 4096 queries: two per span.
pub const MAX_SPANS: u32 = 2048;

pub struct GpuTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    spans: u32,
}

impl GpuTimer {
    /// A timer for up to `spans` passes, or None when the device cannot time.
    pub fn new(gpu: &Gpu, spans: u32) -> Option<GpuTimer> {
        if !gpu.has(wgpu::Features::TIMESTAMP_QUERY) || spans == 0 {
            return None;
        }
        let spans = spans.min(MAX_SPANS);
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * spans,
        });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel timer resolve"),
            size: 2 * spans as u64 * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(GpuTimer {
            queries,
            resolved,
            spans,
        })
    }

    pub fn spans(&self) -> u32 {
        self.spans
    }

    /// The timestamp writes for span `i` (None past capacity: that pass goes untimed).
    pub fn writes(&self, i: u32) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        (i < self.spans).then(|| wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Record the resolve of all queries; call after the timed passes, before finish().
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2 * self.spans, &self.resolved, 0);
    }

    /// Milliseconds of the first `used` spans.
    pub async fn read_ms(&self, gpu: &Gpu, used: u32) -> Result<Vec<f64>, GpuError> {
        let used = used.min(self.spans);
        let bytes = gpu
            .read_bytes(&self.resolved, 2 * used as u64 * wgpu::QUERY_SIZE as u64)
            .await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * ns_per_tick / 1e6)
            .collect())
    }
}
