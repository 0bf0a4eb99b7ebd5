//! Multiple-choice scoring (`acc`, `acc_norm`) agrees with scoring each choice as its own
//! example, on the golden tiny Llama with a byte-level tokenizer; `webqlora eval --json`
//! reports the same; the scorer's log-likelihoods equal the full forward's.

mod common;

use webqlora::data::records::read_jsonl;
use webqlora::data::{Example, Mcq, Record, NO_LOSS};
use webqlora::model::load::upload_model;
use webqlora::model::transformer::BaseFormat;
use webqlora::train::evaluate::{question_items, Item, Scorer, ScorerShape};
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
    // Small passes and head runs: questions spread over passes, several runs a pass.
    let shape = ScorerShape {
        tokens: 128,
        positions: 128,
        capacity: 5,
    };
    let scorer = Scorer::new(gpu, &source.config, BaseFormat::F32, None, shape).unwrap();
    let missing = upload_model(
        gpu,
        &scorer.compiled,
        &scorer.model,
        source.weights.as_ref(),
        BaseFormat::F32,
        None,
    )
    .unwrap();
    assert!(missing.is_empty());
    let mut heard = Vec::new();
    let items = question_items(tok, &questions, false).unwrap();
    let score = pollster::block_on(scorer.mcq(gpu, &questions, &items, |i| heard.push(i))).unwrap();
    assert!(heard.len() > 1 && heard.last() == Some(&12), "{heard:?}");
    assert_eq!(score.n, 12);

    // Each choice scored on its own, through the loss path: a plain sequence, where the
    // question scored the choices as branches after one shared prompt. Same log-likelihoods.
    let first_row = &items.first_row;
    let slots = *first_row.last().unwrap();
    let branched = pollster::block_on(scorer.score(gpu, &items.items, slots, &mut |_| {})).unwrap();
    let (mut right, mut right_norm) = (0, 0);
    let (mut answer_ll, mut answer_tokens) = (0.0, 0);
    for (qi, q) in questions.iter().enumerate() {
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
            let s = pollster::block_on(scorer.loss(gpu, &[ex])).unwrap();
            assert_eq!(s.tokens, cont.len());
            let alone = -s.loss * s.tokens as f64;
            let (together, count) = branched[first_row[qi] + c];
            assert_eq!(count, cont.len());
            assert!(
                ((together - alone) / alone).abs() < 1e-5,
                "question {qi} choice {c}: {together} as a branch, {alone} alone"
            );
            ll.push((alone, text.chars().count() as f64));
            if c == q.answer {
                answer_ll += alone;
                answer_tokens += cont.len();
            }
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
    // Without a terminal, progress is plain lines on stderr (stdout holds only the JSON).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("eval: question 12/12 (100%); elapsed "),
        "{stderr}"
    );
    assert_eq!(j["accuracy"].as_f64().unwrap(), score.accuracy);
    assert_eq!(j["acc_norm"].as_f64().unwrap(), score.acc_norm);
    // The loss of the questions as examples (prompt, then the answer): the right answers.
    let want = -answer_ll / answer_tokens as f64;
    let loss = j["loss"].as_f64().unwrap();
    assert!(((loss - want) / want).abs() < 1e-5, "loss {loss} vs {want}");
    assert_eq!(j["tokens"], answer_tokens);

    // A question longer than --max-seq-len with its longest choice (not only its answer) is an
    // error naming the file and the question's line (the first twelve lines are questions).
    let (longest, needed) = items
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| (i, item.positions_needed()))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["eval", "--model", dir.to_str().unwrap(), "--base", "f32"])
        .args(["--limit", "12", "--max-seq-len", &(needed - 1).to_string()])
        .args(["--data", test.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let at = format!(
        "test.jsonl:{}: the prompt and its longest choice are {needed} tokens",
        longest + 1
    );
    assert!(stderr.contains(&at), "{stderr}");
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
    common::for_each_seed("scorer", &[], |mut rng| {
        // Two of every three positions scored: 21 targets, three head runs of seven.
        let targets: Vec<u32> = (0..rows * seq)
            .map(|p| {
                if p % 3 == 0 {
                    IGNORE
                } else {
                    rng.random_range(0..v as u32)
                }
            })
            .collect();
        assert!(targets.iter().filter(|&&t| t != IGNORE).count() > 2 * 7);
        let gpu = common::gpu();
        // Both rows in one pass, seven scored positions a head run.
        let shape = ScorerShape {
            tokens: rows * seq,
            positions: seq,
            capacity: 7,
        };
        let scorer = Scorer::new(gpu, &config, BaseFormat::F32, None, shape).unwrap();
        scorer.compiled.poison(gpu, common::POISON);
        let missing = upload_model(
            gpu,
            &scorer.compiled,
            &scorer.model,
            &files,
            BaseFormat::F32,
            None,
        )
        .unwrap();
        assert!(missing.is_empty(), "{missing:?}");
        let items: Vec<Item> = (0..rows)
            .map(|r| Item {
                ids: ids[r * seq..(r + 1) * seq].to_vec(),
                branch: vec![0; seq],
                positions: (0..seq as u32).collect(),
                targets: (0..seq)
                    .filter(|&p| targets[r * seq + p] != IGNORE)
                    .map(|p| (p, targets[r * seq + p], r))
                    .collect(),
            })
            .collect();
        let got = pollster::block_on(scorer.score(gpu, &items, rows, &mut |_| {})).unwrap();
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
            assert!(
                ((sum - want) / want).abs() < 1e-5,
                "row {r}: {sum} vs {want}"
            );
        }
    });
}

/// A scorer's shape: passes of 1,024 tokens (or the longest item), capacity for the targets
/// of the fullest pass, positions for the longest item.
#[test]
fn scorer_shape_fits_the_fullest_pass() {
    let item = |len: usize, targets: usize| Item {
        ids: vec![1; len],
        branch: vec![0; len],
        positions: (0..len as u32).collect(),
        targets: (0..targets).map(|p| (p, 1, 0)).collect(),
    };
    // Passes: [600], [500, 300]; the second holds 9 targets.
    let items = [item(600, 3), item(500, 4), item(300, 5)];
    let shape = ScorerShape::for_items(&[&items], 1024, 49152, 128 << 20);
    assert_eq!(
        shape,
        ScorerShape {
            tokens: 1024,
            positions: 600,
            capacity: 9
        }
    );
    // A longer item widens the pass; capacity stays within 64 MiB of logits.
    let long = [item(1500, 1400)];
    let shape = ScorerShape::for_items(&[&items, &long], 1024, 49152, 128 << 20);
    assert_eq!((shape.tokens, shape.capacity), (1500, 341));
}
