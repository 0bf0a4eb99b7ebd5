// attention_backward_dq_tex.wgsl for software devices whose subgroups are eight lanes wide, at
// head_dim 64: the same bindings and results, a subgroup per 32 query rows of one head (see
// attention_forward_tex_sg.wgsl). Built followed by attention_rows_sg.wgsl and
// tile_queue.wgsl.
//
// Lane l owns queries q0 + l + 8s (slot s < 4); per block of eight keys, lane l fetches key
// and value kb + l and the lanes share them by broadcast.
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, 64]
//   1 d_out   storage, read        f32[tokens, heads, 64]
//   2 lse     storage, read        f32[tokens, heads]
//   3 delta   storage, read        f32[tokens, heads]
//   4 dq      storage, read_write  f32[tokens, heads, 64]   every element written
//   5 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale }
//   6 k_tex   texture, read-only   rgba32float [tokens * kv_heads, 16]
//   7 v_tex   texture, read-only   rgba32float [tokens * kv_heads, 16]
//  15 queue   tile_queue.wgsl's
// Dispatch: `Dispatch::TileQueue` workgroups of 8 invocations (one subgroup), taking tiles of
// 32 queries of one head (ceil(tokens / 32) · heads tiles) from tile_queue.wgsl's queue.
// Queries past the last token are clamped to it: computed, never stored.

struct Params {
    tokens: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var k_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var v_tex: texture_storage_2d<rgba32float, read>;

fn q_mat(b: u32) -> mat4x4<f32> {
    return mat4x4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
}

fn q_row(row: u32) -> Row {
    let b = row * 16u;
    return Row(q_mat(b), q_mat(b + 4u), q_mat(b + 8u), q_mat(b + 12u));
}

fn d_out_mat(b: u32) -> mat4x4<f32> {
    return mat4x4<f32>(d_out[b], d_out[b + 1u], d_out[b + 2u], d_out[b + 3u]);
}

fn d_out_row(row: u32) -> Row {
    let b = row * 16u;
    return Row(d_out_mat(b), d_out_mat(b + 4u), d_out_mat(b + 8u), d_out_mat(b + 12u));
}

/// What the four slots' queries need besides their accumulators.
struct Queries {
    q: Rows4,
    d_out: Rows4,
    lse: vec4<f32>,
    delta: vec4<f32>,
    first: vec4<u32>,
    t: vec4<u32>,
}

/// acc + ds * k for key j (k, v its rows), for each slot whose query sees it.
fn add_key(acc: Rows4, qs: Queries, j: u32, k: Row, v: Row) -> Rows4 {
    let seen = (vec4<u32>(j) >= qs.first) & (vec4<u32>(j) <= qs.t);
    let p = select(vec4<f32>(0.0), exp(rows_dot(qs.q, k) * params.scale - qs.lse), seen);
    let ds = p * (rows_dot(qs.d_out, v) - qs.delta) * params.scale;
    return rows_axpy(acc, ds, k);
}

@compute @workgroup_size(8)
fn attention_backward_dq_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let blocks = (params.tokens + 31u) / 32u;
    for (var tile = next_tile(lane); tile < blocks * params.heads; tile = next_tile(lane)) {
        attention_backward_dq_tex_sg_tile(query_tile(tile, blocks, params.heads), lane);
    }
}

/// The query block wg.x (32 queries) of head wg.y.
fn attention_backward_dq_tex_sg_tile(wg: vec2<u32>, lane: u32) {
    let h = wg.y;
    let kv = h / (params.heads / params.kv_heads);
    let q0 = wg.x * 32u;
    let last = params.tokens - 1u;
    let t = min(vec4<u32>(q0 + lane) + vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(last));
    let rows = t * params.heads + h;
    let qs = Queries(
        Rows4(q_row(rows.x), q_row(rows.y), q_row(rows.z), q_row(rows.w)),
        Rows4(d_out_row(rows.x), d_out_row(rows.y), d_out_row(rows.z), d_out_row(rows.w)),
        vec4<f32>(lse[rows.x], lse[rows.y], lse[rows.z], lse[rows.w]),
        vec4<f32>(delta[rows.x], delta[rows.y], delta[rows.z], delta[rows.w]),
        t - t % params.seq_len,
        t,
    );
    var acc: Rows4;
    let key_end = min(q0 + 32u, params.tokens); // one past the block's last query
    for (var kb = q0 - q0 % params.seq_len; kb < key_end; kb += 8u) {
        let r = i32(min(kb + lane, last) * params.kv_heads + kv);
        let keys = texture_row(k_tex, r);
        let values = texture_row(v_tex, r);
        acc = add_key(acc, qs, kb, row_from0(keys), row_from0(values));
        acc = add_key(acc, qs, kb + 1u, row_from1(keys), row_from1(values));
        acc = add_key(acc, qs, kb + 2u, row_from2(keys), row_from2(values));
        acc = add_key(acc, qs, kb + 3u, row_from3(keys), row_from3(values));
        acc = add_key(acc, qs, kb + 4u, row_from4(keys), row_from4(values));
        acc = add_key(acc, qs, kb + 5u, row_from5(keys), row_from5(values));
        acc = add_key(acc, qs, kb + 6u, row_from6(keys), row_from6(values));
        acc = add_key(acc, qs, kb + 7u, row_from7(keys), row_from7(values));
    }
    let owned = vec4<u32>(q0 + lane) + vec4<u32>(0u, 8u, 16u, 24u) < vec4<u32>(params.tokens);
    if owned.x {
        store(rows.x, acc.r0);
    }
    if owned.y {
        store(rows.y, acc.r1);
    }
    if owned.z {
        store(rows.z, acc.r2);
    }
    if owned.w {
        store(rows.w, acc.r3);
    }
}

fn store_mat(b: u32, x: mat4x4<f32>) {
    dq[b] = x[0];
    dq[b + 1u] = x[1];
    dq[b + 2u] = x[2];
    dq[b + 3u] = x[3];
}

fn store(row: u32, x: Row) {
    let b = row * 16u;
    store_mat(b, x.m0);
    store_mat(b + 4u, x.m1);
    store_mat(b + 8u, x.m2);
    store_mat(b + 12u, x.m3);
}
