// Attention backward, FlashAttention-2 style (the portable kernels), step 1 of 2: each query
// row's delta (d_out · out, the term the softmax backward subtracts) and its query gradient.
// The workgroups and tiles are the forward's (attention_flash_forward.wgsl): a block of
// queries of every head of one kv group, keys and values loaded a tile at a time into
// workgroup memory; the probabilities are recomputed from the saved log-sum-exp.
//   p_ij = exp(scale * q_i · k_j - lse_i),  dp_ij = d_out_i · v_j,  delta_i = d_out_i · out_i
//   dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 out     storage, read        f32[tokens, heads, head_dim]
//   5 lse     storage, read        f32[tokens, heads]
//   6 delta   storage, read_write  f32[tokens, heads]             every element written
//   7 dq      storage, read_write  f32[tokens, heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
// Eight storage buffers: WebGPU's default per-stage limit.
// Dispatch: as attention_flash_forward.
// attention_params.wgsl, attention_common.wgsl and attention_flash_queries.wgsl are appended.

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_flash_backward_dq(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = query_block(wg.x + wg.y * nwg.x, params);
    if b.t0 >= params.tokens {
        return;
    }
    let r = query_row(b, lid, params);
    let live = r.live;
    let t = r.t;
    let row = r.row;
    let first = first_key(t, params);

    var q_row: array<vec4<f32>, MAX_D4>;
    var do_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    var lse_row = 0.0;
    var delta_row = 0.0;
    if live {
        var dot_out = 0.0;
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
            do_row[d] = d_out[row * D4 + d];
            dot_out += dot(do_row[d], out[row * D4 + d]);
        }
        delta_row = dot_out;
        delta[row] = dot_out;
        lse_row = lse[row];
    }
    for (var j0 = first_key(b.t0, params); j0 <= b.t_last; j0 += KEYS) {
        load_key_tile(b, j0, lid, params);
        workgroupBarrier();
        if live {
            for (var jj = 0u; jj < KEYS; jj++) {
                let j = j0 + jj;
                if j < first || j > t {
                    continue;
                }
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < D4; d++) {
                    s += dot(q_row[d], k_tile[jj * D4 + d]);
                    dp += dot(do_row[d], v_tile[jj * D4 + d]);
                }
                let ds = exp(s - lse_row) * (dp - delta_row) * params.scale;
                for (var d = 0u; d < D4; d++) {
                    acc[d] += ds * k_tile[jj * D4 + d];
                }
            }
        }
        workgroupBarrier();
    }
    if live {
        for (var d = 0u; d < D4; d++) {
            dq[row * D4 + d] = acc[d];
        }
    }
}
