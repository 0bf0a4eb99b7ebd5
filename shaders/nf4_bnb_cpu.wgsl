// NF4 Y = X W^T as bitsandbytes computes it on CPUs with AVX512-BF16 (its eval-mode kernel,
// `gemv_4bit_inference_cpu_nf4_bf16`), bit for bit: x, the NF4 value and the absmax each
// rounded to bf16; each scale block of a row summed alone in f32 over pairs of inputs, the odd
// one of a pair first (the order of the AVX512-BF16 dot-product instruction; every product is
// exact); the block sum scaled into the total with one fused multiply-add; the total rounded to
// bf16. A path for reproducing references made that way (`quant::bnb_cpu`), not a fast one.
// W is NF4 [out, in] in the GPU layout of nf4_matmul.wgsl; `in` must be a multiple of the
// blocksize (the host checks), as in bitsandbytes' CPU layout.
//
// Bindings (group 0):
//   0 x         storage, read        f32 [T, in]
//   1 w         storage, read        u32 [ceil(out * in / 8)]  NF4 codes, eight a word
//   2 w_absmax  storage, read        f32 [out * in / blocksize]
//   3 y         storage, read_write  f32 [T, out]
//   4 params    uniform              { rows (T), n_in, n_out, blocksize }
// Dispatch: linear, ceil(T * out / 64) workgroups of 64, one output each.

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    blocksize: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> w_absmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
);

/// The NF4 code of W at flattened index `idx`.
fn code_at(idx: u32) -> u32 {
    return (w[idx / 8u] >> (4u * (idx % 8u))) & 15u;
}

// ---- A correctly rounded fused multiply-add in integer arithmetic: bitsandbytes' kernel
// scales each block sum with a hardware FMA, and WGSL's fma() may be computed as a multiply
// and an add (lavapipe does). 64-bit integers are vec2<u32>(hi, lo).

fn shl64(v: vec2<u32>, n: u32) -> vec2<u32> {
    if n == 0u {
        return v;
    }
    if n >= 32u {
        return vec2<u32>(v.y << (n - 32u), 0u);
    }
    return vec2<u32>((v.x << n) | (v.y >> (32u - n)), v.y << n);
}

/// v >> n for n < 64.
fn shr64(v: vec2<u32>, n: u32) -> vec2<u32> {
    if n == 0u {
        return v;
    }
    if n >= 32u {
        return vec2<u32>(0u, v.x >> (n - 32u));
    }
    return vec2<u32>(v.x >> n, (v.y >> n) | (v.x << (32u - n)));
}

/// v >> n with every bit shifted out OR-ed into bit 0 (the sticky bit), for any n.
fn shr64_sticky(v: vec2<u32>, n: u32) -> vec2<u32> {
    if n == 0u {
        return v;
    }
    if n >= 64u {
        return vec2<u32>(0u, select(0u, 1u, (v.x | v.y) != 0u));
    }
    var kept: vec2<u32>;
    var lost: u32;
    if n >= 32u {
        let m = n - 32u;
        kept = vec2<u32>(0u, v.x >> m);
        lost = v.y | select(v.x << (32u - m), 0u, m == 0u);
    } else {
        kept = vec2<u32>(v.x >> n, (v.y >> n) | (v.x << (32u - n)));
        lost = v.y << (32u - n);
    }
    return vec2<u32>(kept.x, kept.y | select(0u, 1u, lost != 0u));
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.y + b.y;
    return vec2<u32>(a.x + b.x + select(0u, 1u, lo < a.y), lo);
}

/// a - b for a >= b.
fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x - select(0u, 1u, a.y < b.y), a.y - b.y);
}

fn clz64(v: vec2<u32>) -> u32 {
    return select(32u + countLeadingZeros(v.y), countLeadingZeros(v.x), v.x != 0u);
}

/// The full 64-bit product of two u32.
fn mul64(a: u32, b: u32) -> vec2<u32> {
    let a_hi = a >> 16u;
    let a_lo = a & 0xffffu;
    let b_hi = b >> 16u;
    let b_lo = b & 0xffffu;
    let cross = add64(vec2<u32>(0u, a_hi * b_lo), vec2<u32>(0u, a_lo * b_hi));
    return add64(vec2<u32>(a_hi * b_hi, a_lo * b_lo), shl64(cross, 16u));
}

/// A finite f32 as sign, integer significand m and exponent e: |v| = m * 2^e.
struct Unpacked {
    sign: u32,
    m: u32,
    e: i32,
}

fn unpack(v: f32) -> Unpacked {
    let u = bitcast<u32>(v);
    let field = (u >> 23u) & 0xffu;
    let frac = u & 0x7fffffu;
    if field == 0u {
        return Unpacked(u >> 31u, frac, -149);
    }
    return Unpacked(u >> 31u, frac | 0x800000u, i32(field) - 150);
}

/// a * b + c rounded once (to nearest, ties to even), for finite inputs; a result below f32's
/// normal range flushes to zero.
fn fma_exact(a: f32, b: f32, c: f32) -> f32 {
    let ua = unpack(a);
    let ub = unpack(b);
    let uc = unpack(c);
    let p = mul64(ua.m, ub.m);
    if (p.x | p.y) == 0u {
        return c;
    }
    // Both operands as 64-bit significands with the top bit at bit 62 (room for a carry).
    let p_shift = clz64(p) - 1u;
    var big = shl64(p, p_shift);
    var big_e = ua.e + ub.e - i32(p_shift);
    var big_sign = ua.sign ^ ub.sign;
    var small = vec2<u32>(0u, 0u);
    var small_e = big_e;
    var small_sign = big_sign;
    if uc.m != 0u {
        let c_wide = vec2<u32>(0u, uc.m);
        let c_shift = clz64(c_wide) - 1u;
        small = shl64(c_wide, c_shift);
        small_e = uc.e - i32(c_shift);
        small_sign = uc.sign;
        let c_larger = small_e > big_e
            || (small_e == big_e && (small.x > big.x || (small.x == big.x && small.y > big.y)));
        if c_larger {
            let m = big;
            let e = big_e;
            let sign = big_sign;
            big = small;
            big_e = small_e;
            big_sign = small_sign;
            small = m;
            small_e = e;
            small_sign = sign;
        }
        small = shr64_sticky(small, u32(big_e - small_e));
    }
    var sum: vec2<u32>;
    if small_sign == big_sign {
        sum = add64(big, small);
    } else {
        sum = sub64(big, small);
    }
    if (sum.x | sum.y) == 0u {
        return 0.0;
    }
    // Keep 24 significant bits, round the rest to nearest even. The alignment's sticky bit
    // sits at bit 0, far below the guard bit: the operands carry at least 14 trailing zeros,
    // so bits are only lost when the exponents differ by more, and then the sum keeps its top
    // within a bit of bit 62.
    let top = 63u - clz64(sum);
    var m: u32;
    var e: i32;
    if top > 23u {
        let drop = top - 23u;
        m = shr64(sum, drop).y;
        let guard = shr64(sum, drop - 1u).y & 1u;
        // Any bit below the guard: those bits shifted to the top of the word pair.
        var sticky = false;
        if drop > 1u {
            let below = shl64(sum, 65u - drop);
            sticky = (below.x | below.y) != 0u;
        }
        m += select(0u, 1u, guard == 1u && (sticky || (m & 1u) == 1u));
        e = big_e + i32(drop);
        if m == 0x1000000u {
            m = 0x800000u;
            e += 1;
        }
    } else {
        m = shl64(sum, 23u - top).y;
        e = big_e - i32(23u - top);
    }
    let field = e + 150;
    let sign = big_sign << 31u;
    if field >= 255 {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if field <= 0 {
        return bitcast<f32>(sign);
    }
    return bitcast<f32>(sign | (u32(field) << 23u) | (m & 0x7fffffu));
}

/// v rounded to bf16 (to nearest, ties to even, as torch converts), kept in an f32.
fn bf16(v: f32) -> f32 {
    let u = bitcast<u32>(v);
    return bitcast<f32>((u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u);
}

@compute @workgroup_size(64)
fn nf4_bnb_cpu_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.n_out {
        return;
    }
    // Both factors of a product have 8-bit significands: every product is exact in f32, and
    // only the order of the sums matters (see the header).
    let n_in = params.n_in;
    let bs = params.blocksize;
    let x_row = (i / params.n_out) * n_in;
    let w_row = (i % params.n_out) * n_in;
    var acc = 0.0;
    for (var k0 = 0u; k0 < n_in; k0 += bs) {
        var block_sum = 0.0;
        for (var k = k0; k < k0 + bs; k += 2u) {
            block_sum = fma(bf16(x[x_row + k + 1u]), bf16(NF4[code_at(w_row + k + 1u)]), block_sum);
            block_sum = fma(bf16(x[x_row + k]), bf16(NF4[code_at(w_row + k)]), block_sum);
        }
        acc = fma_exact(block_sum, bf16(w_absmax[(w_row + k0) / bs]), acc);
    }
    y[i] = bf16(acc);
}
