// AdamW, as torch.optim.AdamW (decoupled weight decay, bias correction, no amsgrad):
//   g = grad * grad_scale[0]                     (the clip factor from grad_norm.wgsl, or 1)
//   param *= 1 - lr * weight_decay
//   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
//   param -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// lr and the bias corrections bc1 = 1 - beta1^step, bc2 = 1 - beta2^step change every step,
// so the host writes them to the small `hyper` tensor instead of rebuilding the graph.
//
// Bindings (group 0):
//   0 param       storage, read_write  f32[n]
//   1 grad        storage, read        f32[n]
//   2 m           storage, read_write  f32[n]   first moment
//   3 v           storage, read_write  f32[n]   second moment
//   4 hyper       storage, read        f32[4]   (lr, bc1, bc2, unused)
//   5 grad_scale  storage, read        f32[1]
//   6 params      uniform              { n, beta1, beta2, eps, weight_decay }
// Dispatch: linear, ceil(n / 64) workgroups of 64, one element each.

struct Params {
    n: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> hyper: array<f32>;
@group(0) @binding(5) var<storage, read> grad_scale: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn adamw(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    let lr = hyper[0];
    let bc1 = hyper[1];
    let bc2 = hyper[2];
    let g = grad[i] * grad_scale[0];
    var p = param[i] * (1.0 - lr * params.weight_decay);
    let m_new = m[i] + (1.0 - params.beta1) * (g - m[i]);
    let v_new = params.beta2 * v[i] + (1.0 - params.beta2) * g * g;
    let denom = sqrt(v_new) / sqrt(bc2) + params.eps;
    p -= (lr / bc1) * (m_new / denom);
    m[i] = m_new;
    v[i] = v_new;
    param[i] = p;
}
