// Shared by the FlashAttention-2 kernels over packed rows with a per-token mask (f32[tokens,
// 4]: first, branch, position, 0; attention_flash_forward_masked.wgsl and
// attention_flash_backward_dq_masked.wgsl, appended after attention_flash_queries.wgsl): the
// start of a block's key walk, shared as a uniform value, and each key tile's branches and
// positions beside its keys.

/// The key tile's (branch, position), loaded with its keys.
var<workgroup> key_mask_tile: array<vec2<f32>, 64>;
var<workgroup> block_first: u32;

/// `first`, the first key the block's first token sees (every invocation passes the same),
/// as a uniform value: the key loop around the barriers then stays in uniform control flow.
fn block_first_key(first: u32, lid: u32) -> u32 {
    if lid == 0u {
        block_first = first;
    }
    return workgroupUniformLoad(&block_first);
}

/// Whether a query with mask `own` sees the tile's key `jj` by branch and window (the caller
/// checks first <= j <= t).
fn tile_key_seen(own: vec4<f32>, jj: u32, p: Params) -> bool {
    let key = key_mask_tile[jj];
    return (key.x == 0.0 || key.x == own.y) && own.z - key.y < f32(p.window);
}
