//! Multiple-choice scoring (`acc`, `acc_norm`) agrees with scoring each choice as its own
//! example, on the golden tiny Llama with a byte-level tokenizer; `webqlora eval --json`
//! reports the same.

mod common;

use webqlora::data::records::read_jsonl;
use webqlora::data::{Example, Mcq, Record, NO_LOSS};
use webqlora::model::llama::BaseFormat;
use webqlora::model::load::upload_model;
use webqlora::train::evaluate::Scorer;
use webqlora::train::model_source::ModelSource;

#[test]
fn mcq_accuracy_is_the_best_choice_by_likelihood() {
    let dir = common::tiny_llama_with_tokenizer("mcq");
    let source = ModelSource::open(&dir).unwrap();
    let tok = source.tokenizer().unwrap();
    let test = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mcq/test.jsonl");
    let questions: Vec<Mcq> = read_jsonl(&test)
        .unwrap()
        .into_iter()
        .take(12)
        .map(|(_, r)| match r {
            Record::Mcq(q) => q,
            _ => panic!("the MCQ data holds questions"),
        })
        .collect();
    let gpu = common::gpu();
    let scorer = Scorer::new(gpu, &source.config, BaseFormat::F32, None, 4, 128).unwrap();
    let missing = upload_model(
        gpu,
        &scorer.compiled,
        &source.config,
        source.weights.as_ref(),
        BaseFormat::F32,
        None,
    )
    .unwrap();
    assert!(missing.is_empty());
    let score = pollster::block_on(scorer.mcq(gpu, tok, &questions, false, 0, |_| {})).unwrap();
    assert_eq!(score.n, 12);

    // Each choice scored on its own, through the loss path.
    let (mut right, mut right_norm) = (0, 0);
    for q in &questions {
        let prompt = tok.encode(&q.prompt(), true).unwrap();
        let mut ll = Vec::new();
        for c in 0..q.choices.len() {
            let text = q.continuation(c, false);
            let cont = tok.encode(&text, false).unwrap();
            let ids = [prompt.clone(), cont.clone()].concat();
            let labels = prompt
                .iter()
                .map(|_| NO_LOSS)
                .chain(cont.iter().map(|&i| i as i64))
                .collect();
            let ex = Example {
                ids,
                labels,
                line: 0,
            };
            let s = pollster::block_on(scorer.loss(gpu, &[ex], 0)).unwrap();
            assert_eq!(s.tokens, cont.len());
            ll.push((-s.loss * s.tokens as f64, text.chars().count() as f64));
        }
        let best = |f: &dyn Fn(&(f64, f64)) -> f64| {
            (0..ll.len())
                .max_by(|&a, &b| f(&ll[a]).total_cmp(&f(&ll[b])).then(b.cmp(&a)))
                .unwrap()
        };
        right += (best(&|x| x.0) == q.answer) as usize;
        right_norm += (best(&|x| x.0 / x.1) == q.answer) as usize;
    }
    assert_eq!(score.accuracy, right as f64 / 12.0);
    assert_eq!(score.acc_norm, right_norm as f64 / 12.0);

    // The CLI reports the same numbers.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args([
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--base",
            "f32",
            "--limit",
            "12",
        ])
        .args(["--data", test.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["n"], 12);
    assert_eq!(j["accuracy"].as_f64().unwrap(), score.accuracy);
    assert_eq!(j["acc_norm"].as_f64().unwrap(), score.acc_norm);
}
