//! Crafted GGUF files are refused at parse time, naming what is wrong: never a panic, a stack
//! overflow, an allocation of what a count claims, a hang, or weights read wrong.

mod common;

use common::temp_dir;
use common::tiny_gguf::{tiny_llama_gguf, tiny_llama_gguf_blocks, tiny_llama_gguf_with};
use webqlora::model::gguf::GgufFile;
use webqlora::quant::ggml::GgmlType;

/// Where the tensor-table entry of `name` (n_dims first) starts in a GGUF file's bytes.
fn entry(bytes: &[u8], name: &str) -> usize {
    bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap_or_else(|| panic!("no {name}"))
        + name.len()
}

fn refused(path: &std::path::Path, bytes: &[u8], want: &str) {
    std::fs::write(path, bytes).unwrap();
    let err = GgufFile::open(path).err().map(|e| e.to_string());
    let err = err.unwrap_or_else(|| panic!("accepted; wanted {want}"));
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains(want),
        "wanted {want}: {err}"
    );
}

/// Crafted GGUF files are refused at parse time with what is wrong, never a panic, a stack
/// overflow, an allocation of what a count claims, or wrong weights: offsets that wrap or
/// are unaligned, a dimensionless tensor, duplicate names, rows that are not whole blocks,
/// arrays nested without end or longer than the file, counts no tensor backs, special token
/// ids past the vocabulary.
#[test]
fn crafted_gguf_files_are_refused_at_parse_time() {
    let dir = temp_dir("gguf_crafted");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let good = std::fs::read(&path).unwrap();
    GgufFile::open(&path).unwrap();
    let embd = entry(&good, "token_embd.weight");
    // n_dims (4), two dims (16), type (4), then the offset.
    let offset_at = embd + 4 + 16 + 4;
    let offset = u64::from_le_bytes(good[offset_at..offset_at + 8].try_into().unwrap());

    let mut b = good.clone();
    b[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    refused(&path, &b, "runs past the end of the file");
    let mut b = good.clone();
    b[offset_at..offset_at + 8].copy_from_slice(&(offset + 4).to_le_bytes());
    refused(&path, &b, "not a multiple of the file's alignment");
    // Dimensions whose bytes overflow a usize (found by the fuzzer: a multiply panicked).
    let mut b = good.clone();
    b[embd + 4..embd + 12].copy_from_slice(&(1u64 << 62).to_le_bytes());
    b[embd + 12..embd + 20].copy_from_slice(&2u64.to_le_bytes());
    refused(&path, &b, "is larger than any file");
    let mut b = good.clone();
    b[embd..embd + 4].copy_from_slice(&0u32.to_le_bytes());
    refused(&path, &b, "tensor 'token_embd.weight' has 0 dimensions");
    let mut b = good.clone();
    b[embd + 4..embd + 12].copy_from_slice(&0u64.to_le_bytes());
    refused(&path, &b, "empty dimension");
    // Two entries of one name: the later one would win.
    let mut b = good.clone();
    let second = entry(&good, "blk.1.attn_norm.weight") - "blk.1.attn_norm.weight".len();
    b[second..second + 5].copy_from_slice(b"blk.0");
    refused(&path, &b, "'blk.0.attn_norm.weight' appears twice");

    // A metadata count one too low: the last key is read as a tensor.
    let mut b = good.clone();
    let count = u64::from_le_bytes(b[16..24].try_into().unwrap());
    b[16..24].copy_from_slice(&(count - 1).to_le_bytes());
    refused(&path, &b, "so the header's metadata count");

    // Counts against the tensors present.
    tiny_llama_gguf_with(&path, &[("llama.block_count", 1e12)]);
    refused(
        &path,
        &std::fs::read(&path).unwrap(),
        "'llama.block_count' is 4294967295, but the file holds tensors for 2 blocks",
    );
    tiny_llama_gguf_with(&path, &[("llama.attention.head_count", 1e9)]);
    refused(
        &path,
        &std::fs::read(&path).unwrap(),
        "'llama.attention.head_count' is 1000000000 heads",
    );
    tiny_llama_gguf_with(&path, &[("tokenizer.ggml.bos_token_id", 1000.0)]);
    refused(
        &path,
        &std::fs::read(&path).unwrap(),
        "'tokenizer.ggml.bos_token_id' is 1000, past the vocabulary of 256 tokens",
    );

    // A Q4_K weight whose 64-value rows are not whole 256-value blocks (the total is).
    tiny_llama_gguf_blocks(&path, &[], &[], None, &mut |name, v| {
        (name == "model.layers.0.self_attn.q_proj.weight")
            .then(|| (GgmlType::Q4K, vec![0u8; v.len() / 256 * 144]))
    });
    refused(
        &path,
        &std::fs::read(&path).unwrap(),
        "rows of 64 values are not whole Q4_K blocks of 256",
    );

    // Metadata: an array nested two million deep; an array longer than the file.
    let header = |value: &[u8]| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.push(b'x');
        b.extend(value);
        b
    };
    let mut nested = 9u32.to_le_bytes().to_vec();
    for _ in 0..2_000_000 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    refused(&path, &header(&nested), "nested more than 4 deep");
    let mut long = 9u32.to_le_bytes().to_vec();
    long.extend(4u32.to_le_bytes());
    long.extend((1u64 << 40).to_le_bytes());
    long.extend([0u8; 64]);
    refused(&path, &header(&long), "is larger than the file");
}
