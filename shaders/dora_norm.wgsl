// DoRA's row norms n[j] = ‖W[j, :] + s·(B·A)[j, :]‖ for an adapted linear W [out, in], from
// the expansion ‖W_j‖² + 2s·Σ_k B[j, k]·(A·Wᵀ)[k, j] + s²·Σ_k B[j, k]·(B·A·Aᵀ)[j, k], so W is
// read once, by the base product of A (r rows), and never dequantized whole. ‖W_j‖² is the
// frozen base's (computed once, at load).
//
// Bindings (group 0):
//   0 base_norms2  storage, read        f32[out]     ‖W_j‖²
//   1 b            storage, read        f32[out, r]  lora_B
//   2 aw           storage, read        f32[r, out]  A·Wᵀ
//   3 bg           storage, read        f32[out, r]  B·(A·Aᵀ)
//   4 norm         storage, read_write  f32[out]     every element written
//   5 params       uniform              { out, r, scale }
// Dispatch: linear, ceil(out / 64) workgroups of 64, one row each.

struct Params {
    out: u32,
    r: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> base_norms2: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> aw: array<f32>;
@group(0) @binding(3) var<storage, read> bg: array<f32>;
@group(0) @binding(4) var<storage, read_write> norm: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn dora_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = (wg.x + wg.y * nwg.x) * 64u + lid;
    if j >= params.out {
        return;
    }
    var cross = 0.0;
    var square = 0.0;
    for (var k = 0u; k < params.r; k++) {
        let bjk = b[j * params.r + k];
        cross += bjk * aw[k * params.out + j];
        square += bjk * bg[j * params.r + k];
    }
    let s = params.scale;
    // Rounding can take an all-zero row a hair below zero.
    norm[j] = sqrt(max(base_norms2[j] + 2.0 * s * cross + s * s * square, 0.0));
}
