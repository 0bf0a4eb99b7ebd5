//! Labelled storage buffers, uploads, and asynchronous readback that works natively and in
//! the browser (the map callback completes a oneshot channel; natively we poll the device,
//! in the browser the event loop drives it).

use super::device::{Gpu, GpuError};

/// Storage buffers must be a multiple of 4 bytes long and bindings non-empty; they are made a
/// multiple of 16, so that a linear-layout pack (`ops::software::pack::Linear`) can copy the partial
/// last texel of a tensor whose length is not a multiple of four values.
pub fn storage_size(bytes: u64) -> u64 {
    bytes.max(16).div_ceil(16) * 16
}

impl Gpu {
    /// A storage buffer that kernels read and write and the host can copy to and from.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: storage_size(bytes),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `data` (kernel parameters).
    pub fn uniform_buffer(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: storage_size(data.len() as u64).max(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, data);
        buffer
    }

    /// Queue a write of `data` at the start of `buffer` (padded to 4 bytes).
    pub fn upload(&self, buffer: &wgpu::Buffer, data: &[u8]) {
        self.upload_at(buffer, 0, data);
    }

    /// Queue a write of `data` at byte `offset` of `buffer` (a multiple of 4; padded to 4
    /// bytes).
    pub fn upload_at(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buffer, offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer, offset, &padded);
        }
    }

    /// Copy `bytes` bytes from the start of `buffer` back to the host.
    pub async fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
        self.read_bytes_at(buffer, 0, bytes).await
    }

    /// Copy `bytes` bytes from byte `offset` (a multiple of 4) of `buffer` back to the host.
    pub async fn read_bytes_at(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        // Copies move whole 4-byte words; the buffer's size is a multiple of 16.
        let size = storage_size(bytes).min(buffer.size() - offset);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);

        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        self.poll_wait();
        match receiver.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // A failed map usually follows a device error: report that cause.
                self.check()?;
                return Err(GpuError::Map(e.to_string()));
            }
            Err(_) => return Err(GpuError::Map("the device dropped the map request".into())),
        }
        let mut out = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::Map(format!("{e:?}")))?
            .to_vec();
        staging.unmap();
        self.check()?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// Read `buffer` back as f32 values.
    pub async fn read_f32(
        &self,
        buffer: &wgpu::Buffer,
        count: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read_bytes(buffer, 4 * count as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
