// A block of columns: dst[r, first + c] = src[r, c] for r < rows, c < cols. Puts the logits of
// one row part of a split lm-head (a vocabulary larger than one binding) into the full
// [rows, dst_cols] logits; the parts' blocks together write every element of dst.
//
// Bindings (group 0):
//   0 src     storage, read        f32[rows, cols]
//   1 dst     storage, read_write  f32[rows, dst_cols]   columns first .. first + cols written
//   2 params  uniform              { rows, cols, dst_cols, first }
// Dispatch: linear, ceil(rows * cols / 64) workgroups of 64, one value each.

struct Params {
    rows: u32,
    cols: u32,
    dst_cols: u32,
    first: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn copy_columns(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.cols {
        return;
    }
    let r = i / params.cols;
    let c = i % params.cols;
    dst[r * params.dst_cols + params.first + c] = src[i];
}
