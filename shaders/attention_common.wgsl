// Shared by the portable attention kernels over whole sequences (appended after
// attention_params.wgsl to the FlashAttention-2 kernels attention_flash_*.wgsl and to the row
// kernels attention_forward*, attention_backward_dq*, attention_backward_dkv and
// attention_backward_dkv_masked): the q, k, v bindings every one of them reads first, and which
// keys a query sees.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;

/// The first key token t sees: its sequence's first, or the window's (keys up to t itself).
fn first_key(t: u32, p: Params) -> u32 {
    return max(t - t % p.seq_len, select(0u, t + 1u - p.window, t >= p.window));
}
