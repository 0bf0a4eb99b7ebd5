// Shared by the portable attention kernels over whole sequences (appended to the
// FlashAttention-2 kernels attention_flash_*.wgsl and to the row kernels attention_forward,
// attention_forward_masked, attention_backward_dq and attention_backward_dkv): their head_dim
// constant, parameters, the q, k, v bindings every one of them reads first, and which keys a
// query sees.

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

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;

/// The first key token t sees: its sequence's first, or the window's (keys up to t itself).
fn first_key(t: u32, p: Params) -> u32 {
    return max(t - t % p.seq_len, select(0u, t + 1u - p.window, t >= p.window));
}
