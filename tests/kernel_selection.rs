//! The kernels each op family runs on devices of every kind, chosen without a GPU: the
//! device's capabilities (`Capabilities`, as wgpu reports them) → `Kernels::decide` →
//! `ops::select`'s one function a family, at SmolLM2-135M's training shapes and the edge
//! shapes each choice turns on. A change of choice on any device shows here first.

use webqlora::kernels::{Capabilities, Kernels};
use webqlora::ops::select::{
    self, AttentionKey, AttentionSelect, MatmulKey, Nf4Key, Nf4Shape, ProductShape, TextureShape,
};

/// A device as wgpu reports it.
fn device(software: bool, subgroups: Option<(u32, u32)>, workgroup_bytes: u32) -> Capabilities {
    Capabilities {
        software,
        storage_textures: 8,
        max_texture_side: 16384,
        texture_parameters: true,
        subgroups,
        shader_f16: !software,
        workgroup_storage_bytes: workgroup_bytes,
        invocations_per_workgroup: 1024,
    }
}

/// The devices of the table, by name.
fn devices() -> Vec<(&'static str, Kernels)> {
    let mut gl = device(true, None, 32768);
    gl.texture_parameters = false;
    let mut browser = device(false, None, 16384);
    browser.invocations_per_workgroup = 256;
    let mut small = device(false, Some((32, 32)), 8192);
    small.invocations_per_workgroup = 256;
    [
        ("lavapipe (8 lanes)", device(true, Some((8, 8)), 32768)),
        ("lavapipe (16 lanes)", device(true, Some((16, 16)), 32768)),
        ("SwiftShader", device(true, None, 32768)),
        ("llvmpipe through OpenGL", gl),
        ("NVIDIA H100", device(false, Some((32, 32)), 49152)),
        ("AMD RDNA (wave32/64)", device(false, Some((32, 64)), 65536)),
        ("Apple M-series", device(false, Some((32, 32)), 32768)),
        ("Intel Xe", device(false, Some((8, 32)), 65536)),
        ("browser adapter without subgroups", browser),
        ("below WebGPU's minimums", small),
    ]
    .into_iter()
    .map(|(name, caps)| (name, Kernels::decide(&caps)))
    .collect()
}

fn kernels(name: &str) -> Kernels {
    devices()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no device {name}"))
        .1
}

const LAVAPIPE: &str = "lavapipe (8 lanes)";
const HARDWARE: [&str; 5] = [
    "NVIDIA H100",
    "AMD RDNA (wave32/64)",
    "Apple M-series",
    "Intel Xe",
    "browser adapter without subgroups",
];
/// Software-path devices with textures but not eight-lane subgroups.
const PLAIN_TEXTURES: [&str; 3] = [
    "lavapipe (16 lanes)",
    "SwiftShader",
    "below WebGPU's minimums",
];
/// Through OpenGL, storage textures cannot be function parameters: buffer kernels.
const BUFFERS: &str = "llvmpipe through OpenGL";

/// SmolLM2-135M at 4 × 256 tokens.
const T: usize = 1024;
const HIDDEN: usize = 576;
const MLP: usize = 1536;

fn product(m: usize, n: usize, k: usize, k_major: bool) -> ProductShape {
    ProductShape { m, n, k, k_major }
}

#[test]
fn f32_products() {
    let base = product(T, HIDDEN, HIDDEN, false);
    let lora_a = product(T, 16, HIDDEN, false); // x·Aᵀ
    let lora_tn = product(HIDDEN, 16, T, true); // dA = (dy·B)ᵀ·x, over stored rows
    let lora_t = product(16, HIDDEN, T, false); // narrow transposed: r rows
    let one_row = product(1, HIDDEN, 16, false);
    let tiny = product(40, 40, 40, false);
    let k = kernels(LAVAPIPE);
    let textures = |shape| MatmulKey::Textures {
        shape,
        eight_lanes: true,
    };
    assert_eq!(select::matmul(&k, base), textures(TextureShape::Wide));
    assert_eq!(select::matmul(&k, lora_a), textures(TextureShape::Narrow));
    assert_eq!(select::matmul(&k, lora_tn), textures(TextureShape::Tn));
    assert_eq!(
        select::matmul(&k, lora_t),
        textures(TextureShape::NarrowTransposed)
    );
    // One row (decoding's adapters) as the transposed narrow product.
    assert_eq!(
        select::matmul(&k, one_row),
        textures(TextureShape::NarrowTransposed)
    );
    assert_eq!(select::matmul(&k, tiny), MatmulKey::Buffer);
    // A side past the texture limit leaves the texture kernels.
    let long = product(T, 20_000, HIDDEN, false);
    assert_eq!(select::matmul(&k, long), MatmulKey::Buffer);
    // Without eight-lane subgroups: the same textures, the plain kernels.
    for name in PLAIN_TEXTURES {
        let plain = MatmulKey::Textures {
            shape: TextureShape::Wide,
            eight_lanes: false,
        };
        assert_eq!(select::matmul(&kernels(name), base), plain, "{name}");
    }
    let gl = kernels(BUFFERS);
    for p in [base, lora_a, lora_tn, one_row] {
        assert_eq!(select::matmul(&gl, p), MatmulKey::Buffer, "{p:?}");
    }
    // Hardware: workgroup tiles, k steps of 32 where 17 KiB of workgroup memory fit.
    for name in HARDWARE {
        let k = kernels(name);
        let depth = if name.starts_with("browser") { 16 } else { 32 };
        for p in [base, lora_a, lora_tn, lora_t, tiny] {
            let want = MatmulKey::Tiles { depth };
            assert_eq!(select::matmul(&k, p), want, "{name} {p:?}");
        }
        assert_eq!(select::matmul(&k, one_row), MatmulKey::Buffer, "{name}");
    }
}

fn nf4_shape(rows: usize, n_in: usize, n_out: usize, backward: bool) -> Nf4Shape {
    Nf4Shape {
        rows,
        n_in,
        n_out,
        blocksize: 64,
        backward,
    }
}

#[test]
fn nf4_products() {
    let up = nf4_shape(T, HIDDEN, MLP, false);
    let up_back = nf4_shape(T, HIDDEN, MLP, true);
    let k_proj = nf4_shape(T, HIDDEN, 190, false); // outputs not a multiple of 4
    let decode = nf4_shape(1, HIDDEN, MLP, false);
    let odd_decode = nf4_shape(1, 100, 50, false);
    let few_rows = nf4_shape(32, HIDDEN, MLP, false);
    let k = kernels(LAVAPIPE);
    let tex = |eight_lanes| Nf4Key::Textures { eight_lanes };
    assert_eq!(select::nf4(&k, up), tex(true));
    assert_eq!(select::nf4(&k, up_back), tex(true));
    assert_eq!(select::nf4(&k, k_proj), tex(false));
    assert_eq!(select::nf4(&k, decode), Nf4Key::Matvec { rows: false });
    assert_eq!(select::nf4(&k, few_rows), Nf4Key::Buffer);
    for name in PLAIN_TEXTURES {
        assert_eq!(select::nf4(&kernels(name), up), tex(false), "{name}");
    }
    let gl = kernels(BUFFERS);
    assert_eq!(select::nf4(&gl, up), Nf4Key::Buffer);
    assert_eq!(select::nf4(&gl, up_back), Nf4Key::Buffer);
    assert_eq!(select::nf4(&gl, decode), Nf4Key::Matvec { rows: false });
    for name in HARDWARE {
        let k = kernels(name);
        for s in [up, up_back, k_proj, few_rows] {
            assert_eq!(select::nf4(&k, s), Nf4Key::Tiles { f16: false }, "{name}");
        }
        assert_eq!(select::nf4(&k, decode), Nf4Key::Matvec { rows: true });
        assert_eq!(select::nf4(&k, odd_decode), Nf4Key::Matvec { rows: false });
    }
    // The adapter's term: the tiles take any rank over the product's own rows, the eight-lane
    // textures ranks of a multiple of 4.
    let hw = kernels("NVIDIA H100");
    let tiles = select::nf4(&hw, up);
    assert!(tiles.fuses_lora(&hw, up, (T, 16), [MLP, 4]));
    assert!(tiles.fuses_lora(&hw, up, (T, 7), [MLP, 2]));
    assert!(!tiles.fuses_lora(&hw, up, (T / 2, 16), [MLP, 4]));
    let one = nf4_shape(1, HIDDEN, MLP, true);
    assert!(!select::nf4(&hw, one).fuses_lora(&hw, one, (1, 16), [16, 144]));
    let sg = select::nf4(&k, up);
    assert!(sg.fuses_lora(&k, up, (T, 16), [MLP, 4]));
    assert!(!sg.fuses_lora(&k, up, (T, 6), [MLP, 2]));
    let plain = select::nf4(&k, k_proj);
    assert!(!plain.fuses_lora(&k, k_proj, (T, 16), [190, 4]));
}

#[test]
fn attention() {
    let smollm2 = AttentionSelect {
        tokens: T,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        windowed: false,
    };
    let gemma = AttentionSelect {
        head_dim: 256,
        windowed: true,
        heads: 4,
        kv_heads: 1,
        ..smollm2
    };
    let wide_group = AttentionSelect {
        heads: 128,
        kv_heads: 1,
        ..smollm2
    };
    let k = kernels(LAVAPIPE);
    let tex = |eight_lanes| AttentionKey::Textures { eight_lanes };
    assert_eq!(select::attention(&k, smollm2), tex(true));
    assert_eq!(select::attention(&k, gemma), tex(false));
    let windowed = AttentionSelect {
        windowed: true,
        ..smollm2
    };
    assert_eq!(select::attention(&k, windowed), tex(false));
    for name in PLAIN_TEXTURES {
        assert_eq!(
            select::attention(&kernels(name), smollm2),
            tex(false),
            "{name}"
        );
    }
    assert_eq!(
        select::attention(&kernels(BUFFERS), smollm2),
        AttentionKey::Rows
    );
    for name in HARDWARE {
        let k = kernels(name);
        assert_eq!(
            select::attention(&k, smollm2),
            AttentionKey::Flash,
            "{name}"
        );
        assert_eq!(select::attention(&k, gemma), AttentionKey::Flash, "{name}");
        // A kv group wider than the flash workgroup: a row an invocation.
        assert_eq!(select::attention(&k, wide_group), AttentionKey::Rows);
    }
}

#[test]
fn rows_and_cross_entropy() {
    for (name, k) in devices() {
        let hardware = HARDWARE.contains(&name);
        let even = select::rmsnorm(&k, HIDDEN);
        let odd = select::rmsnorm(&k, 577);
        assert_eq!((even.lanes, odd.lanes), (4, 1), "{name}");
        assert_eq!(even.fused_residual, hardware, "{name}");
        assert_eq!(even.backward_rows, hardware, "{name}");
        // Subgroups of 4 to 64 lanes on the portable path (AMD's may be 64 wide).
        let subgroups = hardware && !name.starts_with("browser");
        assert_eq!(even.subgroups, subgroups, "{name}");
        let ce = select::cross_entropy(&k);
        assert_eq!(ce.rows_per_workgroup, hardware, "{name}");
        let textures = !hardware && name != BUFFERS;
        assert_eq!(ce.packed_products, textures, "{name}");
        assert_eq!(select::keep_adapter_products(&k), hardware, "{name}");
    }
    // Subgroups wider than the norm's workgroup of 64 are not used for it.
    let wide = Kernels::decide(&device(false, Some((128, 128)), 32768));
    assert!(!select::rmsnorm(&wide, HIDDEN).subgroups);
}
