//! Datasets: every JSONL shape parsed, tokenized with SmolLM2's tokenizer into ids and
//! labels (prompt masked unless asked), padded into batches.

mod common;

use webqlora::data::{encode_records, parse_jsonl, Batch, EncodeOptions, Mcq, Record, NO_LOSS};
use webqlora::model::gguf::GgufFile;
use webqlora::ops::cross_entropy::IGNORE;
use webqlora::tokenizer::Tokenizer;

fn smollm2_tokenizer() -> Tokenizer {
    let path = common::smollm2_path();
    let file = GgufFile::open(&path).unwrap();
    Tokenizer::from_gguf(&file.metadata, "smollm2").unwrap()
}

fn opts(train_on_inputs: bool) -> EncodeOptions {
    EncodeOptions {
        train_on_inputs,
        max_len: 512,
        mcq_by_letter: false,
    }
}

#[test]
fn every_shape_parses() {
    let text = r#"{"text": "plain"}
{"prompt": "Q?", "completion": " A."}

{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
{"question": "Pick", "choices": ["x", "y", "z"], "answer": "b"}
{"question": "Pick", "choices": ["x", "y"], "answer": 0}
{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}
"#;
    let records = parse_jsonl(text, "d.jsonl").unwrap();
    let lines: Vec<usize> = records.iter().map(|r| r.0).collect();
    assert_eq!(
        lines,
        [1, 2, 4, 5, 6, 7],
        "blank lines skipped, numbers kept"
    );
    assert!(matches!(&records[0].1, Record::Text(t) if t == "plain"));
    assert!(matches!(&records[2].1, Record::Chat(m) if m.len() == 2));
    assert!(matches!(&records[3].1, Record::Mcq(q) if q.answer == 1));
    assert!(matches!(&records[4].1, Record::Mcq(q) if q.answer == 0));
    assert!(matches!(&records[5].1, Record::Tokens { labels: Some(l), .. } if l[0] == -100));

    for (bad, msg) in [
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "last message",
        ),
        (r#"{"prompt": "x"}"#, "'completion' must be a string"),
        (
            r#"{"question": "q", "choices": ["a", "b"], "answer": 2}"#,
            "'answer' 2",
        ),
        (
            r#"{"input_ids": [1, 2], "labels": [1]}"#,
            "1 labels for 2 input_ids",
        ),
        (r#"{"other": 1}"#, "no known fields"),
        ("[1, 2]", "JSON object"),
    ] {
        let err = parse_jsonl(&format!("{{\"text\": \"ok\"}}\n{bad}\n"), "d.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("d.jsonl:2: ") && err.contains(msg), "{err}");
    }
}

#[test]
fn prompts_carry_no_loss_unless_asked() {
    let tok = smollm2_tokenizer();
    let records = parse_jsonl(
        "{\"prompt\": \"The capital of France is\", \"completion\": \" Paris.\"}\n",
        "d",
    )
    .unwrap();
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let answer = tok.encode(" Paris.", false).unwrap();
    let ex = &encode_records(&records, Some(&tok), 49152, &opts(false), "d").unwrap()[0];
    let mut ids = [prompt.clone(), answer.clone()].concat();
    ids.push(2); // <|im_end|>, SmolLM2's EOS
    assert_eq!(ex.ids, ids);
    let masked = ex.labels.iter().take_while(|&&l| l == NO_LOSS).count();
    assert_eq!(masked, prompt.len());
    assert_eq!(ex.counted(), answer.len() + 1);
    let all = &encode_records(&records, Some(&tok), 49152, &opts(true), "d").unwrap()[0];
    assert!(all
        .labels
        .iter()
        .zip(&all.ids)
        .all(|(&l, &i)| l == i as i64));
}

#[test]
fn multiple_choice_prompt_is_the_reference_text() {
    let tok = smollm2_tokenizer();
    let q = Mcq {
        question: "Which planet is largest?".into(),
        choices: vec![
            "Mars".into(),
            "Jupiter".into(),
            "Venus".into(),
            "Mercury".into(),
        ],
        answer: 1,
    };
    // The golden SmolLM2 case is exactly this prompt.
    let golden = common::golden_json("smollm2/smollm2_reference.json");
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["text"].as_str().unwrap().starts_with("Question:"))
        .unwrap();
    assert_eq!(q.prompt(), case["text"].as_str().unwrap());
    let ex = &encode_records(
        &[(1, Record::Mcq(q.clone()))],
        Some(&tok),
        49152,
        &opts(false),
        "d",
    )
    .unwrap()[0];
    let ids: Vec<u64> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        ex.ids[..ids.len()]
            .iter()
            .map(|&i| i as u64)
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        tok.decode(&ex.ids[ids.len()..], false).unwrap(),
        " Jupiter",
        "the answer's text, no EOS"
    );
    assert_eq!(q.continuation(1, true), " B");
}

#[test]
fn chat_learns_only_the_assistant_turn() {
    let tok = smollm2_tokenizer();
    let records = parse_jsonl(
        r#"{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}"#,
        "d",
    )
    .unwrap();
    let ex = &encode_records(&records, Some(&tok), 49152, &opts(false), "d").unwrap()[0];
    let learned: Vec<u32> = ex
        .labels
        .iter()
        .filter(|&&l| l != NO_LOSS)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(tok.decode(&learned, false).unwrap(), "4<|im_end|>\n");
    let text = tok.decode(&ex.ids, false).unwrap();
    assert!(text.ends_with(
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    ));
}

#[test]
fn batches_pad_after_each_example_without_loss() {
    let a = webqlora::data::Example {
        ids: vec![10, 11, 12],
        labels: vec![NO_LOSS, 11, 12],
        line: 1,
    };
    let b = webqlora::data::Example {
        ids: vec![20, 21],
        labels: vec![20, 21],
        line: 2,
    };
    let batch = Batch::pad(&[&a, &b], 3, 4, 0);
    assert_eq!(batch.input_ids, [10, 11, 12, 0, 20, 21, 0, 0, 0, 0, 0, 0]);
    let t = batch.targets();
    let i = IGNORE;
    assert_eq!(t, [11, 12, i, i, 21, i, i, i, i, i, i, i]);
    assert_eq!(batch.counted(), 3);
}

/// Training runs the lm-head on the rows that can carry a loss when they are at most half a
/// batch: the most targets `batch` consecutive places of the epochs' permutations can hold
/// (an example at most once per epoch the batch touches), rounded up to 8.
#[test]
fn scored_rows_cover_the_fullest_batch() {
    use webqlora::data::batch::scored_capacity;
    let example = |len: usize, masked: usize| webqlora::data::Example {
        ids: vec![1; len],
        labels: (0..len)
            .map(|i| if i < masked { NO_LOSS } else { 7 })
            .collect(),
        line: 1,
    };
    // 48-token prompts with 3, 5 and 9 answer tokens, each a target. A batch of 2 can
    // straddle two epochs and hold the fullest twice: 18.
    let mcq = [example(51, 48), example(53, 48), example(57, 48)];
    assert_eq!(scored_capacity(&mcq, 2, 64), Some(24));
    // A batch of 8 touches up to four epochs of three: each example up to four times,
    // 4 × 9 + 4 × 5 = 56.
    assert_eq!(scored_capacity(&mcq, 8, 64), Some(56));
    // Two examples, batches of 4 (a dataset smaller than a batch): up to three epochs,
    // 3 × 9 + 5 = 32.
    assert_eq!(scored_capacity(&mcq[1..], 4, 64), Some(32));
    // Check the bound against every batch of a long run.
    let order = webqlora::train::data_order::DataOrder {
        examples: 3,
        batch: 8,
        seed: 3,
        shuffle: true,
    };
    let most = (0..500)
        .map(|k| {
            order
                .micro_batch(k)
                .iter()
                .map(|&i| mcq[i].counted())
                .sum::<usize>()
        })
        .max()
        .unwrap();
    assert!(most <= 56 && most > 36, "{most}");
    // Text data: every row carries a loss, so the whole batch runs the lm-head.
    let text = [example(40, 0), example(40, 0)];
    assert_eq!(scored_capacity(&text, 2, 40), None);
    assert_eq!(scored_capacity(&[], 2, 40), Some(8));
    // A batch of any size is sized in one pass over the examples (it used to walk the whole
    // batch: a flag of 2^64 - 1 hung `train` before its size was refused).
    let huge = scored_capacity(&mcq, usize::MAX, 64);
    assert!(huge.is_some(), "{huge:?}");
}
