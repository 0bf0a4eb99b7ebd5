// Embedding gather: out[t, c] = scale * table[ids[t], c] (scale 1 but for Gemma's √hidden). Ids are checked against the vocabulary on
// the host before upload; an id past the table still reads inside it (clamped), except
// ZERO_ROW (0xffffffff), which gives a row of zeros: training gathers the scored rows of the
// final hidden state with this kernel and spreads their gradient back with it.
//
// Bindings (group 0):
//   0 ids     storage, read        u32[tokens]
//   1 table   storage, read        f32[vocab, dim]
//   2 out     storage, read_write  f32[tokens, dim]   every element written
//   3 params  uniform              { tokens, dim, vocab, scale }
// Dispatch: linear, ceil(tokens * dim / 64) workgroups of 64, one element each.

struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn embedding(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.tokens * params.dim {
        return;
    }
    let t = i / params.dim;
    let c = i % params.dim;
    let raw = ids[t];
    if raw == 0xffffffffu {
        out[i] = 0.0;
        return;
    }
    let id = min(raw, params.vocab - 1u);
    out[i] = table[id * params.dim + c] * params.scale;
}
