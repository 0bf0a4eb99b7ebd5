//! Every WGSL file under `shaders/`, compiled into the binary. A test checks that this list
//! and the folder agree and that naga validates each file. `shaders/software/` holds the
//! kernels written for software devices (lavapipe, SwiftShader: textures, eight-lane
//! subgroups, tile queues), which only the software path (`crate::kernels`) runs.

/// One WGSL source: a file, with the files of shared functions appended to it.
#[derive(Debug)]
pub struct Shader {
    /// The shader's name: its file's stem, `shaders/<name>.wgsl`, or for a variant of a file
    /// built with other appended files, a name of its own (`residual_vec4`: residual.wgsl
    /// with lanes_4.wgsl).
    pub name: &'static str,
    /// The stem of its first file.
    pub file: &'static str,
    pub source: &'static str,
    /// Device features the shader needs (`enable f16;` needs SHADER_F16, and so on).
    pub features: wgpu::Features,
}

macro_rules! shader {
    // A file followed by files of shared functions (no bindings, no entry point), under a
    // name of its own (one file, several variants).
    ($ident:ident, $file:literal as $name:literal, $features:expr, then $($shared:literal),+) => {
        pub static $ident: Shader = Shader {
            name: $name,
            file: $file,
            source: concat!(
                include_str!(concat!("../shaders/", $file, ".wgsl")),
                $("\n", include_str!(concat!("../shaders/", $shared, ".wgsl")),)+
            ),
            features: $features,
        };
    };
    // A file after a file of declarations (which may hold `enable` directives, which must
    // come first), under a name of its own.
    ($ident:ident, $file:literal as $name:literal, $features:expr, after $first:literal) => {
        pub static $ident: Shader = Shader {
            name: $name,
            file: $file,
            source: concat!(
                include_str!(concat!("../shaders/", $first, ".wgsl")),
                "\n",
                include_str!(concat!("../shaders/", $file, ".wgsl")),
            ),
            features: $features,
        };
    };
    // Both: declarations first, then the file, then shared functions.
    ($ident:ident, $file:literal as $name:literal, $features:expr, after $first:literal,
     then $($shared:literal),+) => {
        pub static $ident: Shader = Shader {
            name: $name,
            file: $file,
            source: concat!(
                include_str!(concat!("../shaders/", $first, ".wgsl")),
                "\n",
                include_str!(concat!("../shaders/", $file, ".wgsl")),
                $("\n", include_str!(concat!("../shaders/", $shared, ".wgsl")),)+
            ),
            features: $features,
        };
    };
    ($ident:ident, $name:literal) => {
        shader!($ident, $name, wgpu::Features::empty());
    };
    ($ident:ident, $name:literal, $features:expr) => {
        pub static $ident: Shader = Shader {
            name: $name,
            file: $name,
            source: include_str!(concat!("../shaders/", $name, ".wgsl")),
            features: $features,
        };
    };
    // A kernel file followed by files of shared functions.
    ($ident:ident, $name:literal, $features:expr, then $($shared:literal),+) => {
        shader!($ident, $name as $name, $features, then $($shared),+);
    };
}

shader!(ADAMW, "adamw");
shader!(
    ATTENTION_BACKWARD_DKV,
    "attention_backward_dkv",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_BACKWARD_DKV_TEX,
    "software/attention_backward_dkv_tex",
    wgpu::Features::empty(),
    then "attention_params"
);
shader!(
    ATTENTION_BACKWARD_DKV_TEX_SG,
    "software/attention_backward_dkv_tex_sg",
    wgpu::Features::SUBGROUP,
    then "software/attention_rows_sg",
    "software/tile_queue"
);
shader!(
    ATTENTION_BACKWARD_DQ,
    "attention_backward_dq",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_BACKWARD_DQ_TEX,
    "software/attention_backward_dq_tex",
    wgpu::Features::empty(),
    then "attention_params"
);
shader!(
    ATTENTION_BACKWARD_DQ_TEX_SG,
    "software/attention_backward_dq_tex_sg",
    wgpu::Features::SUBGROUP,
    then "software/attention_rows_sg",
    "software/tile_queue"
);
shader!(ACCUMULATE, "accumulate");
shader!(
    ATTENTION_DECODE,
    "attention_decode" as "attention_decode",
    wgpu::Features::empty(),
    after "cache_f32"
);
shader!(
    ATTENTION_DECODE_F16,
    "attention_decode" as "attention_decode_f16",
    wgpu::Features::SHADER_F16,
    after "cache_f16"
);
shader!(ATTENTION_DELTA, "attention_delta");
shader!(CACHE_F16, "cache_f16", wgpu::Features::SHADER_F16);
shader!(CACHE_F32, "cache_f32");
shader!(
    ATTENTION_COMMON,
    "attention_common" as "attention_common",
    wgpu::Features::empty(),
    after "attention_params"
);
shader!(ATTENTION_PARAMS, "attention_params");
shader!(
    ATTENTION_FLASH_QUERIES,
    "attention_flash_queries" as "attention_flash_queries",
    wgpu::Features::empty(),
    after "attention_params",
    then "attention_common"
);
shader!(
    ATTENTION_FLASH_BACKWARD_DKV,
    "attention_flash_backward_dkv",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_FLASH_BACKWARD_DQ,
    "attention_flash_backward_dq",
    wgpu::Features::empty(),
    then "attention_params", "attention_common",
    "attention_flash_queries"
);
shader!(
    ATTENTION_FLASH_FORWARD,
    "attention_flash_forward",
    wgpu::Features::empty(),
    then "attention_params", "attention_common",
    "attention_flash_queries"
);
shader!(
    ATTENTION_FORWARD,
    "attention_forward",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_FORWARD_TEX,
    "software/attention_forward_tex",
    wgpu::Features::empty(),
    then "attention_params"
);
shader!(
    ATTENTION_FORWARD_TEX_SG,
    "software/attention_forward_tex_sg",
    wgpu::Features::SUBGROUP,
    then "software/attention_rows_sg",
    "software/tile_queue"
);
shader!(
    ATTENTION_ROWS_SG,
    "software/attention_rows_sg",
    wgpu::Features::SUBGROUP
);
shader!(
    ATTENTION_FORWARD_MASKED,
    "attention_forward_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_BACKWARD_DQ_MASKED,
    "attention_backward_dq_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_BACKWARD_DKV_MASKED,
    "attention_backward_dkv_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_FLASH_MASK,
    "attention_flash_mask" as "attention_flash_mask",
    wgpu::Features::empty(),
    after "attention_params",
    then "attention_common",
    "attention_flash_queries"
);
shader!(
    ATTENTION_FLASH_FORWARD_MASKED,
    "attention_flash_forward_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common",
    "attention_flash_queries", "attention_flash_mask"
);
shader!(
    ATTENTION_FLASH_BACKWARD_DQ_MASKED,
    "attention_flash_backward_dq_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common",
    "attention_flash_queries", "attention_flash_mask"
);
shader!(
    ATTENTION_FLASH_BACKWARD_DKV_MASKED,
    "attention_flash_backward_dkv_masked",
    wgpu::Features::empty(),
    then "attention_params", "attention_common"
);
shader!(
    ATTENTION_FORWARD_MASKED_TEX,
    "software/attention_forward_masked_tex",
    wgpu::Features::empty(),
    then "attention_params"
);
shader!(BIAS_ADD, "bias_add");
shader!(COPY_COLUMNS, "copy_columns");
shader!(CROSS_ENTROPY_FINISH, "cross_entropy_finish");
shader!(CROSS_ENTROPY_LOSS, "cross_entropy_loss");
shader!(CROSS_ENTROPY_ONLINE, "cross_entropy_online");
shader!(CROSS_ENTROPY_RESCALE, "cross_entropy_rescale");
shader!(DORA_MAGNITUDE_GRAD, "dora_magnitude_grad");
shader!(DORA_NORM, "dora_norm");
shader!(DORA_SCALE, "dora_scale");
shader!(DROPOUT, "dropout");
shader!(EMBEDDING, "embedding");
shader!(
    EMBEDDING_F16,
    "embedding_f16",
    wgpu::Features::empty(),
    then "f16_words"
);
shader!(F16_WORDS, "f16_words");
shader!(GATED_ACTIVATION, "gated_activation");
shader!(
    GGML_MATMUL,
    "ggml_matmul",
    wgpu::Features::empty(),
    then "f16_words"
);
shader!(
    GEMM,
    "gemm" as "gemm",
    wgpu::Features::empty(),
    after "tile_f32",
    then "tile_product"
);
shader!(GRAD_CLIP, "grad_clip");
shader!(GRAD_NORM, "grad_norm");
shader!(
    KV_STORE,
    "kv_store" as "kv_store",
    wgpu::Features::empty(),
    after "cache_f32"
);
shader!(LANES_1, "lanes_1");
shader!(LANES_4, "lanes_4");
shader!(
    KV_STORE_F16,
    "kv_store" as "kv_store_f16",
    wgpu::Features::SHADER_F16,
    after "cache_f16"
);
shader!(MATMUL, "matmul");
shader!(
    MATMUL_TEX,
    "software/matmul_tex",
    wgpu::Features::empty(),
    then "software/matmul_tex_common"
);
shader!(MATMUL_TEX_COMMON, "software/matmul_tex_common");
shader!(
    MATMUL_TEX_SG,
    "software/matmul_tex_sg",
    wgpu::Features::SUBGROUP,
    then "software/rows_fma_sg",
    "software/tile_queue"
);
shader!(
    MATMUL_TEX_NARROW_SG,
    "software/matmul_tex_narrow_sg",
    wgpu::Features::SUBGROUP,
    then "software/matmul_tex_common"
);
shader!(NF4_BNB_CPU, "nf4_bnb_cpu");
shader!(
    NF4_GEMM,
    "nf4_gemm" as "nf4_gemm",
    wgpu::Features::empty(),
    after "tile_f32",
    then "tile_product"
);
shader!(
    NF4_GEMM_F16,
    "nf4_gemm" as "nf4_gemm_f16",
    wgpu::Features::SHADER_F16,
    after "tile_f16",
    then "tile_product"
);
shader!(NF4_MATMUL, "nf4_matmul");
shader!(
    NF4_MATMUL_TEX,
    "software/nf4_matmul_tex",
    wgpu::Features::empty(),
    then "software/nf4_weights_tex"
);
shader!(
    NF4_MATMUL_TEX_SG,
    "software/nf4_matmul_tex_sg",
    wgpu::Features::SUBGROUP,
    then "software/rows_fma_sg",
    "software/nf4_weights_tex",
    "software/tile_queue"
);
shader!(NF4_WEIGHTS_TEX, "software/nf4_weights_tex");
shader!(
    ROWS_FMA_SG,
    "software/rows_fma_sg",
    wgpu::Features::SUBGROUP
);
shader!(TILE_QUEUE, "software/tile_queue", wgpu::Features::SUBGROUP);
shader!(PACK, "software/pack");
shader!(PACK_VEC4, "software/pack_vec4");
shader!(PACK_WORDS, "software/pack_words");
shader!(RESIDUAL, "residual", wgpu::Features::empty(), then "lanes_1");
shader!(SPLIT_SUM, "split_sum");
shader!(TILE_F16, "tile_f16", wgpu::Features::SHADER_F16);
shader!(TILE_F32, "tile_f32");
shader!(
    TILE_PRODUCT,
    "tile_product" as "tile_product",
    wgpu::Features::empty(),
    after "tile_f32"
);
shader!(
    RESIDUAL_VEC4,
    "residual" as "residual_vec4",
    wgpu::Features::empty(),
    then "lanes_4"
);
shader!(RMSNORM, "rmsnorm", wgpu::Features::empty(), then "lanes_1");
shader!(
    RMSNORM_SUBGROUP,
    "rmsnorm_subgroup",
    wgpu::Features::SUBGROUP
);
shader!(
    RMSNORM_BACKWARD,
    "rmsnorm_backward",
    wgpu::Features::empty(),
    then "lanes_1",
    "row_sum"
);
shader!(
    RMSNORM_BACKWARD_VEC4,
    "rmsnorm_backward" as "rmsnorm_backward_vec4",
    wgpu::Features::empty(),
    then "lanes_4",
    "row_sum"
);
shader!(ROW_SUM, "row_sum");
shader!(
    RMSNORM_RESIDUAL,
    "rmsnorm_residual",
    wgpu::Features::empty(),
    then "row_sum"
);
shader!(
    RMSNORM_VEC4,
    "rmsnorm" as "rmsnorm_vec4",
    wgpu::Features::empty(),
    then "lanes_4"
);
shader!(ROPE, "rope");
shader!(ROPE_QK, "rope_qk");
shader!(ROPE_VEC4, "rope_vec4");
shader!(
    SWIGLU,
    "swiglu",
    wgpu::Features::empty(),
    then "gated_activation",
    "lanes_1"
);
shader!(
    SWIGLU_BACKWARD,
    "swiglu_backward",
    wgpu::Features::empty(),
    then "gated_activation",
    "lanes_1"
);
shader!(
    SWIGLU_BACKWARD_VEC4,
    "swiglu_backward" as "swiglu_backward_vec4",
    wgpu::Features::empty(),
    then "gated_activation",
    "lanes_4"
);
shader!(
    SWIGLU_VEC4,
    "swiglu" as "swiglu_vec4",
    wgpu::Features::empty(),
    then "gated_activation",
    "lanes_4"
);
shader!(
    WIDEN_F16,
    "widen_f16",
    wgpu::Features::empty(),
    then "f16_words"
);

pub static ALL: &[&Shader] = &[
    &ACCUMULATE,
    &ADAMW,
    &ATTENTION_BACKWARD_DKV,
    &ATTENTION_BACKWARD_DKV_TEX,
    &ATTENTION_BACKWARD_DKV_TEX_SG,
    &ATTENTION_BACKWARD_DQ,
    &ATTENTION_BACKWARD_DQ_TEX,
    &ATTENTION_BACKWARD_DQ_TEX_SG,
    &ATTENTION_DECODE,
    &ATTENTION_DECODE_F16,
    &ATTENTION_DELTA,
    &CACHE_F16,
    &CACHE_F32,
    &ATTENTION_COMMON,
    &ATTENTION_PARAMS,
    &ATTENTION_BACKWARD_DQ_MASKED,
    &ATTENTION_BACKWARD_DKV_MASKED,
    &ATTENTION_FLASH_QUERIES,
    &ATTENTION_FLASH_BACKWARD_DKV,
    &ATTENTION_FLASH_BACKWARD_DQ,
    &ATTENTION_FLASH_FORWARD,
    &ATTENTION_FLASH_MASK,
    &ATTENTION_FLASH_FORWARD_MASKED,
    &ATTENTION_FLASH_BACKWARD_DQ_MASKED,
    &ATTENTION_FLASH_BACKWARD_DKV_MASKED,
    &ATTENTION_FORWARD,
    &ATTENTION_FORWARD_TEX,
    &ATTENTION_FORWARD_TEX_SG,
    &ATTENTION_FORWARD_MASKED,
    &ATTENTION_FORWARD_MASKED_TEX,
    &ATTENTION_ROWS_SG,
    &BIAS_ADD,
    &COPY_COLUMNS,
    &CROSS_ENTROPY_FINISH,
    &CROSS_ENTROPY_LOSS,
    &CROSS_ENTROPY_ONLINE,
    &CROSS_ENTROPY_RESCALE,
    &DORA_MAGNITUDE_GRAD,
    &DORA_NORM,
    &DORA_SCALE,
    &DROPOUT,
    &EMBEDDING,
    &EMBEDDING_F16,
    &F16_WORDS,
    &GATED_ACTIVATION,
    &GEMM,
    &GGML_MATMUL,
    &GRAD_CLIP,
    &GRAD_NORM,
    &KV_STORE,
    &LANES_1,
    &LANES_4,
    &KV_STORE_F16,
    &MATMUL,
    &MATMUL_TEX,
    &MATMUL_TEX_COMMON,
    &MATMUL_TEX_SG,
    &MATMUL_TEX_NARROW_SG,
    &NF4_BNB_CPU,
    &NF4_GEMM,
    &NF4_GEMM_F16,
    &NF4_MATMUL,
    &NF4_MATMUL_TEX,
    &NF4_MATMUL_TEX_SG,
    &NF4_WEIGHTS_TEX,
    &PACK,
    &PACK_VEC4,
    &PACK_WORDS,
    &RESIDUAL,
    &RESIDUAL_VEC4,
    &RMSNORM,
    &RMSNORM_SUBGROUP,
    &RMSNORM_BACKWARD,
    &RMSNORM_BACKWARD_VEC4,
    &RMSNORM_RESIDUAL,
    &RMSNORM_VEC4,
    &ROWS_FMA_SG,
    &ROW_SUM,
    &TILE_QUEUE,
    &ROPE,
    &ROPE_QK,
    &ROPE_VEC4,
    &SPLIT_SUM,
    &TILE_F16,
    &TILE_F32,
    &TILE_PRODUCT,
    &SWIGLU,
    &SWIGLU_BACKWARD,
    &SWIGLU_BACKWARD_VEC4,
    &SWIGLU_VEC4,
    &WIDEN_F16,
];
