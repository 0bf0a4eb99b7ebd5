// attention_forward_tex.wgsl for software devices whose subgroups are eight lanes wide, at
// head_dim 64: the same bindings and results (within rounding: blocks of eight keys share one
// softmax rescale), a subgroup per 32 queries of one head. Built followed by
// attention_rows_sg.wgsl (Row, Rows4, row_from<n>, texture_row) and tile_queue.wgsl.
//
// Lane l owns queries q0 + l + 8s (slot s < 4). Per block of eight keys, lane l fetches key and
// value kb + l from the textures and the lanes share them by broadcast, so each fetched row
// serves 32 queries instead of one.
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, 64]
//   1 out     storage, read_write  f32[tokens, heads, 64]   every element written
//   2 lse     storage, read_write  f32[tokens, heads]       every element written
//   3 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale }
//   4 k_tex   texture, read-only   rgba32float [tokens * kv_heads, 16]
//   5 v_tex   texture, read-only   rgba32float [tokens * kv_heads, 16]
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
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var k_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var v_tex: texture_storage_2d<rgba32float, read>;

fn q_mat(b: u32) -> mat4x4<f32> {
    return mat4x4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
}

/// Query row `row` (t * heads + h).
fn q_row(row: u32) -> Row {
    let b = row * 16u;
    return Row(q_mat(b), q_mat(b + 4u), q_mat(b + 8u), q_mat(b + 12u));
}

/// Whether key j is among the keys of each slot's query: first <= j <= t.
fn sees(j: u32, first: vec4<u32>, t: vec4<u32>) -> vec4<bool> {
    return (vec4<u32>(j) >= first) & (vec4<u32>(j) <= t);
}

/// The score where the key is seen, else the lowest float (it never raises the maximum).
fn masked(s: vec4<f32>, seen: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(-3.40282346e38), s, seen);
}

/// exp(s - m) where the key is seen, else 0.
fn weight(s: vec4<f32>, m: vec4<f32>, seen: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp(s - m), seen);
}

@compute @workgroup_size(8)
fn attention_forward_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let blocks = (params.tokens + 31u) / 32u;
    for (var tile = next_tile(lane); tile < blocks * params.heads; tile = next_tile(lane)) {
        attention_forward_tex_sg_tile(query_tile(tile, blocks, params.heads), lane);
    }
}

/// The query block wg.x (32 queries) of head wg.y.
fn attention_forward_tex_sg_tile(wg: vec2<u32>, lane: u32) {
    let h = wg.y;
    let kv = h / (params.heads / params.kv_heads);
    let q0 = wg.x * 32u;
    let last = params.tokens - 1u;
    let t = min(vec4<u32>(q0 + lane) + vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(last));
    let first = t - t % params.seq_len;
    let rows = t * params.heads + h;
    let qs = Rows4(q_row(rows.x), q_row(rows.y), q_row(rows.z), q_row(rows.w));
    var acc: Rows4;
    var m = vec4<f32>(-3.40282346e38);
    var l = vec4<f32>(0.0);
    let key_end = min(q0 + 32u, params.tokens); // one past the block's last query
    for (var kb = q0 - q0 % params.seq_len; kb < key_end; kb += 8u) {
        let r = i32(min(kb + lane, last) * params.kv_heads + kv);
        let keys = texture_row(k_tex, r);
        let seen0 = sees(kb, first, t);
        let seen1 = sees(kb + 1u, first, t);
        let seen2 = sees(kb + 2u, first, t);
        let seen3 = sees(kb + 3u, first, t);
        let seen4 = sees(kb + 4u, first, t);
        let seen5 = sees(kb + 5u, first, t);
        let seen6 = sees(kb + 6u, first, t);
        let seen7 = sees(kb + 7u, first, t);
        let s0 = rows_dot(qs, row_from0(keys)) * params.scale;
        let s1 = rows_dot(qs, row_from1(keys)) * params.scale;
        let s2 = rows_dot(qs, row_from2(keys)) * params.scale;
        let s3 = rows_dot(qs, row_from3(keys)) * params.scale;
        let s4 = rows_dot(qs, row_from4(keys)) * params.scale;
        let s5 = rows_dot(qs, row_from5(keys)) * params.scale;
        let s6 = rows_dot(qs, row_from6(keys)) * params.scale;
        let s7 = rows_dot(qs, row_from7(keys)) * params.scale;
        let block_max = max(
            max(max(masked(s0, seen0), masked(s1, seen1)), max(masked(s2, seen2), masked(s3, seen3))),
            max(max(masked(s4, seen4), masked(s5, seen5)), max(masked(s6, seen6), masked(s7, seen7))),
        );
        let m_new = max(m, block_max);
        let correction = exp(m - m_new);
        let p0 = weight(s0, m_new, seen0);
        let p1 = weight(s1, m_new, seen1);
        let p2 = weight(s2, m_new, seen2);
        let p3 = weight(s3, m_new, seen3);
        let p4 = weight(s4, m_new, seen4);
        let p5 = weight(s5, m_new, seen5);
        let p6 = weight(s6, m_new, seen6);
        let p7 = weight(s7, m_new, seen7);
        l = l * correction + (((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)));
        m = m_new;
        let values = texture_row(v_tex, r);
        acc = rows_scale(acc, correction);
        acc = rows_axpy(acc, p0, row_from0(values));
        acc = rows_axpy(acc, p1, row_from1(values));
        acc = rows_axpy(acc, p2, row_from2(values));
        acc = rows_axpy(acc, p3, row_from3(values));
        acc = rows_axpy(acc, p4, row_from4(values));
        acc = rows_axpy(acc, p5, row_from5(values));
        acc = rows_axpy(acc, p6, row_from6(values));
        acc = rows_axpy(acc, p7, row_from7(values));
    }
    let owned = vec4<u32>(q0 + lane) + vec4<u32>(0u, 8u, 16u, 24u) < vec4<u32>(params.tokens);
    if owned.x {
        store(rows.x, acc.r0, m.x, l.x);
    }
    if owned.y {
        store(rows.y, acc.r1, m.y, l.y);
    }
    if owned.z {
        store(rows.z, acc.r2, m.z, l.z);
    }
    if owned.w {
        store(rows.w, acc.r3, m.w, l.w);
    }
}

fn store_mat(b: u32, x: mat4x4<f32>, l: f32) {
    out[b] = x[0] / l;
    out[b + 1u] = x[1] / l;
    out[b + 2u] = x[2] / l;
    out[b + 3u] = x[3] / l;
}

/// Query row `row`'s output (acc / l) and log-sum-exp.
fn store(row: u32, acc: Row, m: f32, l: f32) {
    let b = row * 16u;
    store_mat(b, acc.m0, l);
    store_mat(b + 4u, acc.m1, l);
    store_mat(b + 8u, acc.m2, l);
    store_mat(b + 12u, acc.m3, l);
    lse[row] = m + log(l);
}
