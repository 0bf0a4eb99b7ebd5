//! One module per op family: the kernel descriptors (bindings in shader order), the graph
//! builder that checks shapes and sizes the dispatch, and the CPU reference tests compare with.

pub mod accumulate;
pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod decode;
pub mod dora;
pub mod dropout;
pub mod embedding;
pub mod ggml_matmul;
pub mod grad_norm;
pub mod matmul;
pub mod nf4_matmul;
pub mod real;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod select;
pub mod software;
pub mod swiglu;

use crate::graph::Kernel;

/// Every kernel the project has (tests check each against its shader's declarations).
pub fn all_kernels() -> Vec<&'static Kernel> {
    vec![
        &accumulate::ACCUMULATE,
        &adamw::ADAMW,
        &attention::FORWARD,
        &attention::DELTA,
        &attention::BACKWARD_DQ,
        &attention::BACKWARD_DKV,
        &attention::FLASH_FORWARD,
        &attention::FLASH_BACKWARD_DQ,
        &attention::FLASH_BACKWARD_DKV,
        &software::attention::FORWARD_TEX,
        &software::attention::FORWARD_TEX_SG,
        &attention::FORWARD_MASKED,
        &attention::BACKWARD_DQ_MASKED,
        &attention::BACKWARD_DKV_MASKED,
        &attention::FLASH_FORWARD_MASKED,
        &attention::FLASH_BACKWARD_DQ_MASKED,
        &attention::FLASH_BACKWARD_DKV_MASKED,
        &software::attention::FORWARD_MASKED_TEX,
        &software::attention::BACKWARD_DQ_TEX,
        &software::attention::BACKWARD_DKV_TEX,
        &software::attention::BACKWARD_DQ_TEX_SG,
        &software::attention::BACKWARD_DKV_TEX_SG,
        &dora::NORM,
        &dora::SCALE,
        &dora::MAGNITUDE_GRAD,
        &decode::KV_STORE,
        &decode::ATTENTION,
        &decode::KV_STORE_F16,
        &decode::ATTENTION_F16,
        &cross_entropy::ONLINE_FIRST,
        &cross_entropy::ONLINE,
        &cross_entropy::RESCALE,
        &cross_entropy::ONLINE_FIRST_ROWS,
        &cross_entropy::ONLINE_ROWS,
        &cross_entropy::RESCALE_ELEMENTS,
        &cross_entropy::LOSS,
        &cross_entropy::FINISH,
        &grad_norm::SUMSQ,
        &grad_norm::CLIP,
        &matmul::MATMUL,
        &matmul::GEMM,
        &matmul::SPLIT_SUM,
        &software::matmul::MATMUL_TEX,
        &software::matmul::MATMUL_TEX_NARROW,
        &software::matmul::MATMUL_TEX_TN,
        &software::matmul::MATMUL_TEX_SG,
        &software::matmul::MATMUL_TEX_SG_KN,
        &software::matmul::MATMUL_TEX_NARROW_SG,
        &software::matmul::MATMUL_TEX_TN_SG,
        &software::nf4::FORWARD_TEX,
        &software::nf4::BACKWARD_TEX,
        &software::nf4::FORWARD_TEX_SG,
        &software::nf4::BACKWARD_TEX_SG,
        &software::pack::PACK_F32,
        &software::pack::PACK_ROWS,
        &software::pack::PACK_COLS,
        &software::pack::PACK_WORDS,
        &matmul::MATVEC,
        &matmul::COPY_COLUMNS,
        &matmul::COPY_COLUMNS_ACC,
        &nf4_matmul::FORWARD,
        &nf4_matmul::FORWARD_BF16,
        &nf4_matmul::BACKWARD,
        &nf4_matmul::MATVEC,
        &nf4_matmul::MATVEC_ROWS,
        &nf4_matmul::GEMM_FORWARD,
        &nf4_matmul::GEMM_FORWARD_F16,
        &nf4_matmul::GEMM_BACKWARD,
        &ggml_matmul::FORWARD,
        &ggml_matmul::BACKWARD,
        &ggml_matmul::MATVEC,
        &dropout::DROPOUT,
        &embedding::GATHER,
        &embedding::GATHER_PART,
        &embedding::GATHER_F16,
        &embedding::GATHER_F16_PART,
        &embedding::WIDEN_F16,
        &residual::ADD,
        &residual::ADD_VEC4,
        &residual::BIAS_ADD,
        &rmsnorm::FORWARD,
        &rmsnorm::BACKWARD,
        &rmsnorm::FORWARD_VEC4,
        &rmsnorm::FORWARD_SUBGROUP,
        &rmsnorm::BACKWARD_VEC4,
        &rmsnorm::BACKWARD_ROWS,
        &rmsnorm::BACKWARD_ROWS_VEC4,
        &rmsnorm::RESIDUAL,
        &rope::ROPE,
        &rope::ROPE_VEC4,
        &rope::ROPE_QK,
        &swiglu::FORWARD,
        &swiglu::BACKWARD,
        &swiglu::FORWARD_VEC4,
        &swiglu::BACKWARD_VEC4,
    ]
}

/// An f32 storage binding read (the attention kernels' and their texture versions' shorthand).
pub(crate) const fn read(name: &'static str) -> crate::graph::Binding {
    crate::graph::Binding::read(name, crate::graph::DType::F32)
}

/// An f32 storage binding written.
pub(crate) const fn write(name: &'static str) -> crate::graph::Binding {
    crate::graph::Binding::write(name, crate::graph::DType::F32)
}
