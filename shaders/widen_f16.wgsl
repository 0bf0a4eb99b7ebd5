// Rows of an f16 table as f32: out[r, c] = f32(table[first + r, c]) for r < rows. The lm-head
// loss and the logits of a large vocabulary (tables kept in f16) widen one block of rows at a
// time into a temporary the f32 products read. The table is read as 32-bit words of two f16
// values (f16_words.wgsl): no shader-f16 needed. dim is even.
//
// Bindings (group 0):
//   0 table   storage, read        f16[table rows, dim] as u32[table rows * dim / 2]
//   1 out     storage, read_write  f32[rows, dim]   every element written
//   2 params  uniform              { rows, dim, first }
// Dispatch: linear, ceil(rows * dim / 2 / 64) workgroups of 64, two values each.

struct Params {
    rows: u32,
    dim: u32,
    first: u32,
}

@group(0) @binding(0) var<storage, read> table: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn widen_f16(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.dim / 2u {
        return;
    }
    out[i] = f16_pair(table[params.first * params.dim / 2u + i]);
}
