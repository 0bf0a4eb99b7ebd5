// Embedding gather: out[t, c] = scale * table[ids[t], c] (scale 1 but for Gemma's √hidden). Ids are checked against the vocabulary on
// the host before upload; an id past the table still reads inside it (clamped), except
// ZERO_ROW (0xffffffff), which gives a row of zeros: training gathers the scored rows of the
// final hidden state with this kernel and spreads their gradient back with it.
//
// A table larger than one binding may hold (Gemma's 262,144 × 640) is split by rows into parts,
// one dispatch each: the part holds rows first .. first + rows; the first dispatch (fill = 1)
// writes every element (zeros where another part holds the row), the others only their rows.
//
// Bindings (group 0):
//   0 ids     storage, read        u32[tokens]
//   1 table   storage, read        f32[rows, dim]    (one part of the [vocab, dim] table)
//   2 out     storage, read_write  f32[tokens, dim]   every element written
//   3 params  uniform              { tokens, dim, vocab, scale, first, rows, fill }
// Dispatch: linear, ceil(tokens * dim / 64) workgroups of 64, one element each.

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
    let id = min(raw, params.vocab - 1u);
    let here = raw != 0xffffffffu && id >= params.first && id - params.first < params.rows;
    if here {
        out[i] = table[(id - params.first) * params.dim + c] * params.scale;
    } else if params.fill != 0u {
        out[i] = 0.0;
    }
}
