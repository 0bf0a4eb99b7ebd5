// The parameters every attention kernel over whole sequences takes, and its head_dim
// constant (appended before attention_common.wgsl to the flash and row kernels, and alone to
// the software texture kernels).

// head_dim is a pipeline constant so every loop over it has a constant trip count and is
// unrolled: llvmpipe (lavapipe) ends any invocation's loops after 65,535 iterations in total,
// which loops over head_dim inside loops over 2,048 keys would exceed.
override HEAD_DIM: u32 = 64u;
override D4: u32 = HEAD_DIM / 4u;
const MAX_D4: u32 = 64u;
/// Invocations a workgroup: query rows (forward, dq) or keys (dkv).
const ROWS: u32 = 64u;

struct Params {
    tokens: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
    /// Keys more than window - 1 positions back are not seen (sliding-window layers);
    /// 0xffffffff for none.
    window: u32,
}
