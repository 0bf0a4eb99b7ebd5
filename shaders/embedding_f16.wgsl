// Embedding gather from an f16 table (large vocabularies keep their tables in f16):
// out[t, c] = scale * f32(table[ids[t], c]), as embedding.wgsl (row parts, ZERO_ROW, clamping,
// fill) but reading the table as 32-bit words of two f16 values (f16_words.wgsl), which every
// device can, without the shader-f16 feature. dim is even.
//
// Bindings (group 0):
//   0 ids     storage, read        u32[tokens]
//   1 table   storage, read        f16[rows, dim] as u32[rows * dim / 2]   one part of the table
//   2 out     storage, read_write  f32[tokens, dim]   every element written by the fill dispatch
//   3 params  uniform              { tokens, dim, vocab, scale, first, rows, fill }
// Dispatch: linear, ceil(tokens * dim / 2 / 64) workgroups of 64, two values each.

struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    scale: f32,
    first: u32,
    rows: u32,
    fill: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn embedding_f16(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid; // a pair of values
    let half_dim = params.dim / 2u;
    if i >= params.tokens * half_dim {
        return;
    }
    let t = i / half_dim;
    let c = i % half_dim;
    let raw = ids[t];
    let id = min(raw, params.vocab - 1u);
    let here = raw != 0xffffffffu && id >= params.first && id - params.first < params.rows;
    if here {
        out[i] = f16_pair(table[(id - params.first) * half_dim + c]) * params.scale;
    } else if params.fill != 0u {
        out[i] = vec2<f32>(0.0);
    }
}
