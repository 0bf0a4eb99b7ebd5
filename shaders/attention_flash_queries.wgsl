// Shared by the FlashAttention-2 kernels that take a block of queries a workgroup (appended
// to attention_flash_forward.wgsl and attention_flash_backward_dq.wgsl, after
// attention_common.wgsl): which query row an invocation takes, and the tiles of keys and
// values they walk.
//   Workgroup w takes kv head w % kv_heads and the 64 / group tokens from (w / kv_heads) *
//   (64 / group); invocation i the query row (token i / group, head i % group of the kv
//   group), so a GQA group's heads share every key loaded.

// Keys a tile: KEYS * head_dim f32 of keys and as many of values fill the two tiles
// (KEYS * D4 <= TILE_V4; 15 KiB in all, leaving room within WebGPU's guaranteed 16 KiB of
// workgroup memory for the masked kernels' key branches and positions).
override KEYS: u32 = 30u;
const TILE_V4: u32 = 480u;

var<workgroup> k_tile: array<vec4<f32>, TILE_V4>;
var<workgroup> v_tile: array<vec4<f32>, TILE_V4>;

/// A workgroup's block (the same for every invocation: uniform, so the key loop around the
/// barriers stays in uniform control flow, as Tint requires).
struct QueryBlock {
    /// The kv head.
    kv: u32,
    /// The block's first and last token.
    t0: u32,
    t_last: u32,
}

/// An invocation's query row in its block.
struct QueryRow {
    /// Token, query head, and row of q (t * heads + h).
    t: u32,
    h: u32,
    row: u32,
    /// Whether the invocation has a query row (the last block may be short; 64 % group
    /// invocations have none).
    live: bool,
}

/// Workgroup `w`'s block (t0 >= tokens: past the last block).
fn query_block(w: u32, p: Params) -> QueryBlock {
    let block_tokens = ROWS / (p.heads / p.kv_heads);
    var b: QueryBlock;
    b.kv = w % p.kv_heads;
    b.t0 = (w / p.kv_heads) * block_tokens;
    b.t_last = min(b.t0 + block_tokens, p.tokens) - 1u;
    return b;
}

/// Invocation `lid`'s row of block `b`.
fn query_row(b: QueryBlock, lid: u32, p: Params) -> QueryRow {
    let group = p.heads / p.kv_heads;
    var r: QueryRow;
    r.t = b.t0 + lid / group;
    r.h = b.kv * group + lid % group;
    r.row = r.t * p.heads + r.h;
    r.live = lid < (ROWS / group) * group && r.t < p.tokens;
    return r;
}

/// Load keys and values j0 .. j0 + KEYS (those up to the block's last token) of the block's
/// kv head into the tiles: neighbouring invocations read neighbouring vec4s.
fn load_key_tile(b: QueryBlock, j0: u32, lid: u32, p: Params) {
    for (var i = lid; i < KEYS * D4; i += ROWS) {
        let j = j0 + i / D4;
        if j <= b.t_last {
            let at = (j * p.kv_heads + b.kv) * D4 + i % D4;
            k_tile[i] = k[at];
            v_tile[i] = v[at];
        }
    }
}
