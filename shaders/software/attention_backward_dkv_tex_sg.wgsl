// attention_backward_dkv_tex.wgsl for software devices whose subgroups are eight lanes wide,
// at head_dim 64: the same bindings and results, a subgroup per 32 key rows of one kv head.
// Built followed by attention_rows_sg.wgsl and tile_queue.wgsl.
//
// Lane l owns keys j0 + l + 8s (slot s < 4). For each head of the kv head's group and each
// block of eight queries, lane l fetches query ib + l (its row, output gradient, lse and
// delta) from the textures and the lanes share them by broadcast.
//
// Bindings (group 0):
//   0 k          storage, read        f32[tokens, kv_heads, 64]
//   1 v          storage, read        f32[tokens, kv_heads, 64]
//   2 dk         storage, read_write  f32[tokens, kv_heads, 64]   every element written
//   3 dv         storage, read_write  f32[tokens, kv_heads, 64]   every element written
//   4 params     uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale }
//   5 q_tex      texture, read-only   rgba32float [tokens * heads, 16]
//   6 d_out_tex  texture, read-only   rgba32float [tokens * heads, 16]
//   7 lse_tex    texture, read-only   rgba32float [tokens * heads, 1]: lse in .x
//   8 delta_tex  texture, read-only   rgba32float [tokens * heads, 1]: delta in .x
//  15 queue      tile_queue.wgsl's
// Dispatch: `Dispatch::TileQueue` workgroups of 8 invocations (one subgroup), taking tiles of
// 32 keys of one head (ceil(tokens / 32) · kv_heads tiles) from tile_queue.wgsl's queue.
// Keys past the last token are clamped to it: computed, never stored.

struct Params {
    tokens: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;
@group(0) @binding(5) var q_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var d_out_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var lse_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var delta_tex: texture_storage_2d<rgba32float, read>;

fn k_mat(b: u32) -> mat4x4<f32> {
    return mat4x4<f32>(k[b], k[b + 1u], k[b + 2u], k[b + 3u]);
}

fn k_row(row: u32) -> Row {
    let b = row * 16u;
    return Row(k_mat(b), k_mat(b + 4u), k_mat(b + 8u), k_mat(b + 12u));
}

fn v_mat(b: u32) -> mat4x4<f32> {
    return mat4x4<f32>(v[b], v[b + 1u], v[b + 2u], v[b + 3u]);
}

fn v_row(row: u32) -> Row {
    let b = row * 16u;
    return Row(v_mat(b), v_mat(b + 4u), v_mat(b + 8u), v_mat(b + 12u));
}

/// The four slots' keys and what bounds the queries that see them.
struct Keys {
    k: Rows4,
    v: Rows4,
    j: vec4<u32>,
    end: vec4<u32>, // one past the last token of each key's sequence
}

struct Grads {
    k: Rows4,
    v: Rows4,
}

/// One query (token i, its row, output gradient, lse and delta) added to each slot's key
/// gradients where it sees the key: j <= i < end.
fn add_query(acc: Grads, keys: Keys, i: u32, q: Row, d_out: Row, lse: f32, delta: f32) -> Grads {
    let seen = (vec4<u32>(i) >= keys.j) & (vec4<u32>(i) < keys.end);
    let p = select(vec4<f32>(0.0), exp(rows_dot(keys.k, q) * params.scale - lse), seen);
    let ds = p * (rows_dot(keys.v, d_out) - delta) * params.scale;
    return Grads(rows_axpy(acc.k, ds, q), rows_axpy(acc.v, p, d_out));
}

@compute @workgroup_size(8)
fn attention_backward_dkv_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let blocks = (params.tokens + 31u) / 32u;
    let tiles = blocks * params.kv_heads;
    for (var tile = next_tile(lane); tile < tiles; tile = next_tile(lane)) {
        // In order: within a sequence the first key blocks are seen by the most queries.
        attention_backward_dkv_tex_sg_tile(vec2<u32>(tile / params.kv_heads, tile % params.kv_heads), lane);
    }
}

/// The key block wg.x (32 keys) of key-value head wg.y.
fn attention_backward_dkv_tex_sg_tile(wg: vec2<u32>, lane: u32) {
    let kv = wg.y;
    let group = params.heads / params.kv_heads;
    let j0 = wg.x * 32u;
    let last = params.tokens - 1u;
    let j = min(vec4<u32>(j0 + lane) + vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(last));
    let rows = j * params.kv_heads + kv;
    let keys = Keys(
        Rows4(k_row(rows.x), k_row(rows.y), k_row(rows.z), k_row(rows.w)),
        Rows4(v_row(rows.x), v_row(rows.y), v_row(rows.z), v_row(rows.w)),
        j,
        j - j % params.seq_len + params.seq_len,
    );
    let j_last = min(j0 + 31u, last);
    let query_end = j_last - j_last % params.seq_len + params.seq_len;
    var acc: Grads;
    for (var h = kv * group; h < (kv + 1u) * group; h++) {
        for (var ib = j0; ib < query_end; ib += 8u) {
            let r = i32(min(ib + lane, last) * params.heads + h);
            let qr = texture_row(q_tex, r);
            let dr = texture_row(d_out_tex, r);
            let lse = textureLoad(lse_tex, vec2<i32>(0, r)).x;
            let delta = textureLoad(delta_tex, vec2<i32>(0, r)).x;
            acc = add_query(acc, keys, ib, row_from0(qr), row_from0(dr), subgroupBroadcast(lse, 0u), subgroupBroadcast(delta, 0u));
            acc = add_query(acc, keys, ib + 1u, row_from1(qr), row_from1(dr), subgroupBroadcast(lse, 1u), subgroupBroadcast(delta, 1u));
            acc = add_query(acc, keys, ib + 2u, row_from2(qr), row_from2(dr), subgroupBroadcast(lse, 2u), subgroupBroadcast(delta, 2u));
            acc = add_query(acc, keys, ib + 3u, row_from3(qr), row_from3(dr), subgroupBroadcast(lse, 3u), subgroupBroadcast(delta, 3u));
            acc = add_query(acc, keys, ib + 4u, row_from4(qr), row_from4(dr), subgroupBroadcast(lse, 4u), subgroupBroadcast(delta, 4u));
            acc = add_query(acc, keys, ib + 5u, row_from5(qr), row_from5(dr), subgroupBroadcast(lse, 5u), subgroupBroadcast(delta, 5u));
            acc = add_query(acc, keys, ib + 6u, row_from6(qr), row_from6(dr), subgroupBroadcast(lse, 6u), subgroupBroadcast(delta, 6u));
            acc = add_query(acc, keys, ib + 7u, row_from7(qr), row_from7(dr), subgroupBroadcast(lse, 7u), subgroupBroadcast(delta, 7u));
        }
    }
    let owned = vec4<u32>(j0 + lane) + vec4<u32>(0u, 8u, 16u, 24u) < vec4<u32>(params.tokens);
    if owned.x {
        store(rows.x, acc.k.r0, acc.v.r0);
    }
    if owned.y {
        store(rows.y, acc.k.r1, acc.v.r1);
    }
    if owned.z {
        store(rows.z, acc.k.r2, acc.v.r2);
    }
    if owned.w {
        store(rows.w, acc.k.r3, acc.v.r3);
    }
}

fn store_mats(b: u32, dk_mat: mat4x4<f32>, dv_mat: mat4x4<f32>) {
    dk[b] = dk_mat[0];
    dk[b + 1u] = dk_mat[1];
    dk[b + 2u] = dk_mat[2];
    dk[b + 3u] = dk_mat[3];
    dv[b] = dv_mat[0];
    dv[b + 1u] = dv_mat[1];
    dv[b + 2u] = dv_mat[2];
    dv[b + 3u] = dv_mat[3];
}

fn store(row: u32, dk_row: Row, dv_row: Row) {
    let b = row * 16u;
    store_mats(b, dk_row.m0, dv_row.m0);
    store_mats(b + 4u, dk_row.m1, dv_row.m1);
    store_mats(b + 8u, dk_row.m2, dv_row.m2);
    store_mats(b + 12u, dk_row.m3, dv_row.m3);
}
