//! `cargo xtask mcq-data`: the MCQ demo data (data/mcq/{train,valid,test}.jsonl), generated
//! deterministically (a fixed-seed SplitMix64, no dependency) so the files in the repository
//! can be checked against this generator.
//!
//! Six categories, four choices each: largest number, smallest number, the sum of two numbers
//! under 100, the word that comes first alphabetically, the capital of a country, the chemical
//! symbol of an element. Countries, elements and words are split between train / valid / test,
//! so no test question is seen in training; numbers are drawn fresh and deduplicated.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

const CAPITALS: &[(&str, &str)] = &[
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Australia", "Canberra"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Greece", "Athens"),
    ("Turkey", "Ankara"),
    ("Ireland", "Dublin"),
    ("Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Hungary", "Budapest"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"),
    ("Indonesia", "Jakarta"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Cuba", "Havana"),
    ("Colombia", "Bogota"),
    ("Nigeria", "Abuja"),
    ("Morocco", "Rabat"),
    ("Ukraine", "Kyiv"),
    ("Czech Republic", "Prague"),
];

const SYMBOLS: &[(&str, &str)] = &[
    ("hydrogen", "H"),
    ("helium", "He"),
    ("lithium", "Li"),
    ("carbon", "C"),
    ("nitrogen", "N"),
    ("oxygen", "O"),
    ("fluorine", "F"),
    ("neon", "Ne"),
    ("sodium", "Na"),
    ("magnesium", "Mg"),
    ("aluminium", "Al"),
    ("silicon", "Si"),
    ("phosphorus", "P"),
    ("sulfur", "S"),
    ("chlorine", "Cl"),
    ("argon", "Ar"),
    ("potassium", "K"),
    ("calcium", "Ca"),
    ("iron", "Fe"),
    ("copper", "Cu"),
    ("zinc", "Zn"),
    ("silver", "Ag"),
    ("gold", "Au"),
    ("tin", "Sn"),
    ("lead", "Pb"),
    ("mercury", "Hg"),
    ("platinum", "Pt"),
    ("nickel", "Ni"),
    ("cobalt", "Co"),
    ("uranium", "U"),
    ("iodine", "I"),
    ("tungsten", "W"),
    ("titanium", "Ti"),
    ("manganese", "Mn"),
    ("chromium", "Cr"),
    ("boron", "B"),
    ("beryllium", "Be"),
    ("krypton", "Kr"),
    ("xenon", "Xe"),
    ("radon", "Rn"),
    ("barium", "Ba"),
    ("bismuth", "Bi"),
];

const WORDS: &[&str] = &[
    "apple", "river", "mountain", "pencil", "garden", "window", "orange", "silver", "forest",
    "candle", "bridge", "planet", "rocket", "tiger", "violin", "meadow", "harbor", "island",
    "jacket", "kettle", "lemon", "marble", "needle", "ocean", "pepper", "quilt", "rabbit",
    "saddle", "tunnel", "umbrella", "valley", "wagon", "yellow", "zebra", "anchor", "basket",
    "cactus", "dragon", "engine", "falcon", "guitar", "hammer", "igloo", "jungle", "kitten",
    "ladder", "mirror", "napkin", "object", "parrot", "quiver", "ribbon", "shadow", "ticket",
    "velvet", "walnut", "bottle", "castle", "desert", "feather", "glacier", "helmet", "insect",
    "journal", "lantern", "magnet", "nectar", "oyster", "pillow", "rainbow", "sandal", "thunder",
];

/// SplitMix64: tiny, fixed, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// `n` distinct values drawn by `draw`.
    fn distinct<T: PartialEq>(&mut self, n: usize, mut draw: impl FnMut(&mut Rng) -> T) -> Vec<T> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = draw(self);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

struct Question {
    question: String,
    choices: Vec<String>,
    answer: usize,
    category: &'static str,
}

/// Put `correct` among `others` at a random place.
fn with_answer(rng: &mut Rng, correct: String, others: Vec<String>) -> (Vec<String>, usize) {
    let mut choices = others;
    let at = rng.below(choices.len() + 1);
    choices.insert(at, correct);
    (choices, at)
}

/// The entities of one split: `part` 0 (train, 70%), 1 (valid, 15%) or 2 (test, 15%).
fn split_of<T: Copy>(items: &[T], part: usize) -> Vec<T> {
    let n = items.len();
    let (a, b) = (n * 70 / 100, n * 85 / 100);
    let range = [0..a, a..b, b..n][part].clone();
    items[range].to_vec()
}

fn question(rng: &mut Rng, category: usize, part: usize, order: &Orders) -> Question {
    match category {
        0 | 1 => {
            let values = rng.distinct(4, |r| r.range(1, 999));
            let pick = if category == 0 {
                *values.iter().max().unwrap()
            } else {
                *values.iter().min().unwrap()
            };
            let answer = values.iter().position(|&v| v == pick).unwrap();
            Question {
                question: format!(
                    "Which number is the {}?",
                    if category == 0 { "largest" } else { "smallest" }
                ),
                choices: values.iter().map(|v| v.to_string()).collect(),
                answer,
                category: if category == 0 { "largest" } else { "smallest" },
            }
        }
        2 => {
            let (a, b) = (rng.range(1, 99), rng.range(1, 99));
            let sum = a + b;
            let others = rng.distinct(3, |r| {
                let d = r.range(-10, 10);
                if d == 0 {
                    sum + 11
                } else {
                    sum + d
                }
            });
            let (choices, answer) = with_answer(
                rng,
                sum.to_string(),
                others.iter().map(|v| v.to_string()).collect(),
            );
            Question {
                question: format!("What is {a} + {b}?"),
                choices,
                answer,
                category: "sum",
            }
        }
        3 => {
            let words = split_of(&order.words, part);
            let picked = rng.distinct(4, |r| words[r.below(words.len())]);
            let first = *picked.iter().min().unwrap();
            Question {
                question: "Which word comes first alphabetically?".into(),
                choices: picked.iter().map(|w| w.to_string()).collect(),
                answer: picked.iter().position(|&w| w == first).unwrap(),
                category: "alphabetical",
            }
        }
        4 => {
            let countries = split_of(&order.capitals, part);
            let (country, capital) = countries[rng.below(countries.len())];
            let others = rng.distinct(3, |r| {
                let c = CAPITALS[r.below(CAPITALS.len())].1;
                if c == capital {
                    "Geneva"
                } else {
                    c
                }
            });
            let (choices, answer) = with_answer(
                rng,
                capital.into(),
                others.iter().map(|c| c.to_string()).collect(),
            );
            Question {
                question: format!("What is the capital of {country}?"),
                choices,
                answer,
                category: "capital",
            }
        }
        _ => {
            let elements = split_of(&order.symbols, part);
            let (element, symbol) = elements[rng.below(elements.len())];
            let others = rng.distinct(3, |r| {
                let s = SYMBOLS[r.below(SYMBOLS.len())].1;
                if s == symbol {
                    "Xy"
                } else {
                    s
                }
            });
            let (choices, answer) = with_answer(
                rng,
                symbol.into(),
                others.iter().map(|s| s.to_string()).collect(),
            );
            Question {
                question: format!("What is the chemical symbol of {element}?"),
                choices,
                answer,
                category: "symbol",
            }
        }
    }
}

/// The entity lists in one fixed shuffled order, so splits are disjoint.
struct Orders {
    capitals: Vec<(&'static str, &'static str)>,
    symbols: Vec<(&'static str, &'static str)>,
    words: Vec<&'static str>,
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The three splits as JSONL texts: (name, count, text).
pub fn generate() -> Vec<(&'static str, usize, String)> {
    let mut rng = Rng(0x5eed_3c0d_e000_0001);
    let mut capitals = CAPITALS.to_vec();
    let mut symbols = SYMBOLS.to_vec();
    let mut words = WORDS.to_vec();
    rng.shuffle(&mut capitals);
    rng.shuffle(&mut symbols);
    rng.shuffle(&mut words);
    let order = Orders {
        capitals,
        symbols,
        words,
    };

    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (part, (name, per_category)) in [("train", 200), ("valid", 10), ("test", 20)]
        .into_iter()
        .enumerate()
    {
        let mut text = String::new();
        let mut count = 0;
        for i in 0..per_category * 6 {
            // Categories interleaved, so any prefix of a file is balanced.
            let category = i % 6;
            let q = loop {
                let q = question(&mut rng, category, part, &order);
                let key = format!("{}|{}", q.question, q.choices.join("|"));
                if seen.insert(key) {
                    break q;
                }
            };
            let choices: Vec<String> = q.choices.iter().map(|c| json_string(c)).collect();
            writeln!(
                text,
                "{{\"question\": {}, \"choices\": [{}], \"answer\": {}, \"category\": \"{}\"}}",
                json_string(&q.question),
                choices.join(", "),
                q.answer,
                q.category
            )
            .unwrap();
            count += 1;
        }
        out.push((name, count, text));
    }
    out
}

/// Write data/mcq/*.jsonl under `root` (or, with `check`, fail if they differ).
pub fn main(root: &Path, check: bool) -> Result<(), String> {
    let dir = root.join("data/mcq");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, count, text) in generate() {
        let path = dir.join(format!("{name}.jsonl"));
        if check {
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk != text {
                return Err(format!(
                    "{} differs from the generator: run `cargo xtask mcq-data`",
                    path.display()
                ));
            }
        } else {
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!("{}: {count} questions", path.display());
    }
    Ok(())
}
