//! Multiple-choice scoring (`acc`, `acc_norm`) agrees with scoring each choice as its own
//! example, on the golden tiny Llama with a byte-level tokenizer; `webqlora eval --json`
//! reports the same; the scorer's log-likelihoods equal the full forward's.

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
    let scorer = Scorer::new(gpu, &source.config, BaseFormat::F32, None, [4, 128, 5]).unwrap();
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

/// The scorer's log-likelihoods (lm-head on the scored positions only, in several head runs
/// when they outnumber its capacity) equal those of the full forward's logits.
#[test]
fn scored_logprobs_equal_the_full_forward() {
    use rand::Rng;
    use webqlora::model::safetensors_files::SafetensorsFiles;
    use webqlora::model::ModelConfig;
    use webqlora::ops::cross_entropy::IGNORE;
    let dir = common::golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let full = common::tiny_llama_logits(&dir, BaseFormat::F32, None);
    let expected = common::Golden::open("tiny-llama/expected.safetensors");
    let (_, shape, id_bytes) = expected.raw("input_ids");
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, i64>(id_bytes)
        .iter()
        .map(|&i| i as u32)
        .collect();
    let (rows, seq, v) = (shape[0], shape[1], config.vocab_size);
    let mut rng = common::rng("scorer");
    let targets: Vec<u32> = (0..rows * seq)
        .map(|_| {
            if rng.random_bool(0.6) {
                rng.random_range(0..v as u32)
            } else {
                IGNORE
            }
        })
        .collect();
    let gpu = common::gpu();
    let scorer = Scorer::new(gpu, &config, BaseFormat::F32, None, [rows, seq, 7]).unwrap();
    scorer.compiled.poison(gpu, common::POISON);
    let missing = upload_model(
        gpu,
        &scorer.compiled,
        &config,
        &files,
        BaseFormat::F32,
        None,
    )
    .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    let got = pollster::block_on(scorer.logprobs(gpu, &ids, &targets)).unwrap();
    for (r, &(sum, count)) in got.iter().enumerate() {
        let (mut want, mut want_count) = (0.0f64, 0);
        for p in r * seq..(r + 1) * seq {
            if targets[p] == IGNORE {
                continue;
            }
            let l = &full[p * v..(p + 1) * v];
            let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            want += l[targets[p] as usize] as f64 - lse;
            want_count += 1;
        }
        assert_eq!(count, want_count, "row {r}");
        assert!(want_count > 7, "row {r} needs more than one head run");
        assert!(
            ((sum - want) / want).abs() < 1e-5,
            "row {r}: {sum} vs {want}"
        );
    }
}

/// Passes hold about 1,024 tokens, split evenly: no nearly empty last pass.
#[test]
fn passes_are_balanced() {
    use webqlora::train::evaluate::{capacity_for, rows_for};
    assert_eq!(rows_for(48, 240), 20); // 12 passes of 20, not 11 of 21 and one of 9
    assert_eq!(rows_for(48, 4), 4);
    assert_eq!(rows_for(2048, 10), 1);
    assert_eq!(rows_for(16, 0), 1);
    // The fullest rows' targets, within 64 MiB of logits.
    assert_eq!(capacity_for([3, 1, 5, 2], 2, 49152, 128 << 20), 8);
    assert_eq!(capacity_for([3000; 4], 4, 49152, 128 << 20), 341);
}
