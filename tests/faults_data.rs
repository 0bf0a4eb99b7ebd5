//! Datasets: bad labels and bad text name file:line in train and eval alike; a byte-order
//! mark is accepted; a dataset smaller than one batch trains.

mod common;

use common::cli::{fails, ok, path, tiny_llama, webqlora};
use common::temp_dir;

fn train(dir: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = tiny_llama();
    let out = dir.join("out");
    let mut args = vec![
        "train",
        "--model",
        path(&model),
        "--base",
        "f32",
        "--data",
        path(data),
        "--output",
        path(&out),
        "--quiet",
    ];
    args.extend(extra);
    webqlora(&args)
}

fn eval(data: &std::path::Path) -> std::process::Output {
    webqlora(&[
        "eval",
        "--model",
        path(&tiny_llama()),
        "--base",
        "f32",
        "--data",
        path(data),
    ])
}

#[test]
fn bad_labels_name_file_and_line_in_train_and_eval() {
    let dir = temp_dir("data-labels");
    let good = r#"{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}"#;
    let cases = [
        (
            r#"{"input_ids": [1, 2, 3], "labels": [-100, 2, 256]}"#,
            "label 256 is outside the model's vocabulary of 256",
        ),
        (
            r#"{"input_ids": [1, 2, 3], "labels": [-100, 2, 99999]}"#,
            "label 99999 is outside",
        ),
        (
            r#"{"input_ids": [1, 2, 3], "labels": [-1, 2, 3]}"#,
            "label -1 is negative",
        ),
    ];
    for (bad, expected) in cases {
        let data = dir.join("bad.jsonl");
        std::fs::write(&data, format!("{good}\n\n{bad}\n")).unwrap();
        for (what, out) in [("train", train(&dir, &data, &[])), ("eval", eval(&data))] {
            let err = fails(out);
            assert!(err.contains("bad.jsonl:3: "), "{what} {bad}: {err}");
            assert!(err.contains(expected), "{what} {bad}: {err}");
        }
        assert!(!dir.join("out").exists());
    }
}

#[test]
fn invalid_utf8_names_the_line_and_a_byte_order_mark_is_accepted() {
    let dir = temp_dir("data-utf8");
    let data = dir.join("latin1.jsonl");
    let mut bytes = b"{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5, 6]}\n".to_vec();
    bytes.extend(b"{\"text\": \"caf\xe9\"}\n");
    std::fs::write(&data, &bytes).unwrap();
    for (what, out) in [("train", train(&dir, &data, &[])), ("eval", eval(&data))] {
        let err = fails(out);
        assert!(err.contains("latin1.jsonl:3: not UTF-8"), "{what}: {err}");
    }

    let data = dir.join("bom.jsonl");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(b"{\"input_ids\": [1, 2, 3, 4]}\r\n{\"input_ids\": [5, 6, 7]}\r\n");
    std::fs::write(&data, &bytes).unwrap();
    ok(eval(&data));
    ok(train(&dir, &data, &["--steps", "1"]));
}

#[test]
fn a_dataset_smaller_than_one_batch_trains() {
    let dir = temp_dir("data-small");
    let data = dir.join("two.jsonl");
    // The issue's case: two records, the default batch of 4 (each example twice a batch).
    std::fs::write(
        &data,
        "{\"input_ids\": [1,2,3,4,5,6]}\n{\"input_ids\": [7,8,9]}\n",
    )
    .unwrap();
    let text = ok(train(&dir, &data, &["--steps", "3"]));
    assert!(text.contains("done: 3 steps"), "{text}");
    // Prompt-masked examples (where scored rows are counted) that straddle epochs too.
    let data = dir.join("masked.jsonl");
    let lines: String = (0..3)
        .map(|i| {
            let ids: Vec<u32> = (1..=30).map(|k| (k * (i + 2)) % 256).collect();
            let labels: Vec<i64> = (0..30)
                .map(|k| if k < 24 { -100 } else { ids[k] as i64 })
                .collect();
            serde_json::json!({"input_ids": ids, "labels": labels}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&data, lines).unwrap();
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let text = ok(train(&dir, &data, &["--steps", "4", "--batch", "8"]));
    assert!(text.contains("done: 4 steps"), "{text}");
}

/// A data path that is not a regular file (a device, a pipe, a folder) is refused before it
/// is read, and a line past the size a record may take is refused by its size, naming the
/// line, before it is parsed or tokenized.
#[test]
fn endless_or_huge_inputs_are_refused_before_they_are_read() {
    let dir = temp_dir("data-endless");
    let fifo = dir.join("pipe.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for data in [
        std::path::Path::new("/dev/zero"),
        fifo.as_path(),
        dir.as_ref(),
    ] {
        let err = fails(train(&dir, data, &["--steps", "1"]));
        assert!(
            err.contains("not a regular file"),
            "{}: {err}",
            data.display()
        );
        let err = fails(eval(data));
        assert!(
            err.contains("not a regular file"),
            "{}: {err}",
            data.display()
        );
    }
    let big = dir.join("big.jsonl");
    let text = "x".repeat(webqlora::data::records::MAX_LINE_BYTES + 1);
    let record = serde_json::json!({ "text": text }).to_string();
    std::fs::write(&big, format!("{{\"input_ids\": [1, 2]}}\n{record}\n")).unwrap();
    let err = fails(train(&dir, &big, &["--steps", "1"]));
    assert!(err.contains(":2") && err.contains("MiB"), "{err}");
    assert!(!dir.join("out").exists());
}
