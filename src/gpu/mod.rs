//! The GPU runtime: adapter choice and device creation, buffers and readback, the pipeline
//! cache and the timestamp profiler.

pub mod buffers;
pub mod device;
pub mod pipelines;
pub mod timer;

pub use device::{AdapterRequest, BackendChoice, DeviceClass, Gpu, GpuError};
