//! Kernels written for software devices (lavapipe, SwiftShader: `shaders/software/`): operand
//! packing into textures and the texture kernels' descriptors. Only the software path
//! (`crate::kernels`) runs them; the op-family modules choose them there.

pub mod attention;
pub mod matmul;
pub mod nf4;
pub mod pack;
