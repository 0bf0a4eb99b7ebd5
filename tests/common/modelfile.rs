//! Ollama's Modelfile syntax as its reference documents it (docs/modelfile.md): `# comment`
//! lines and `INSTRUCTION arguments`, instructions FROM (required, once), PARAMETER, TEMPLATE,
//! SYSTEM, ADAPTER, LICENSE, MESSAGE (case-insensitive); a value is the rest of the line, `"…"`
//! on one line, or `"""…"""` over several; PARAMETER takes one of the documented names; a
//! TEMPLATE is a Go template over the documented variables. A Modelfile that breaks any rule
//! panics here, naming it.

use std::path::{Path, PathBuf};

const INSTRUCTIONS: [&str; 7] = [
    "FROM",
    "PARAMETER",
    "TEMPLATE",
    "SYSTEM",
    "ADAPTER",
    "LICENSE",
    "MESSAGE",
];
const PARAMETERS: [&str; 13] = [
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "num_ctx",
    "repeat_last_n",
    "repeat_penalty",
    "temperature",
    "seed",
    "stop",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
];
const TEMPLATE_VARIABLES: [&str; 6] = [
    ".System",
    ".Prompt",
    ".Response",
    ".Messages",
    ".Role",
    ".Content",
];

#[derive(Debug, Default)]
pub struct Modelfile {
    pub from: PathBuf,
    pub adapters: Vec<PathBuf>,
    pub template: Option<String>,
    pub system: Option<String>,
    /// (name, value) in order.
    pub parameters: Vec<(String, String)>,
}

/// Parse and check the Modelfile at `path`; FROM and ADAPTER paths are resolved against its
/// folder, as Ollama does, and must exist.
pub fn check(path: &Path) -> Modelfile {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = path.parent().unwrap();
    let mut m = Modelfile::default();
    let mut froms = 0;
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..end];
        let line_start = pos;
        pos = end + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (instruction, args) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("an instruction without arguments: {line:?}"));
        let instruction = instruction.to_ascii_uppercase();
        assert!(
            INSTRUCTIONS.contains(&instruction.as_str()),
            "unknown instruction {line:?}"
        );
        let args = args.trim_start();
        let value = if args.starts_with("\"\"\"") {
            // Up to the closing triple quote, across lines.
            let open = line_start + line.find("\"\"\"").unwrap() + 3;
            let close = text[open..]
                .find("\"\"\"")
                .unwrap_or_else(|| panic!("{instruction}: an unclosed \"\"\""))
                + open;
            let after = close + 3;
            let tail_end = text[after..].find('\n').map_or(text.len(), |i| after + i);
            let tail = &text[after..tail_end];
            assert!(
                tail.trim().is_empty(),
                "{instruction}: text after the closing \"\"\": {tail:?}"
            );
            pos = tail_end + 1;
            text[open..close].to_string()
        } else {
            args.to_string()
        };
        match instruction.as_str() {
            "FROM" => {
                froms += 1;
                m.from = resolve(dir, &value);
            }
            "ADAPTER" => m.adapters.push(resolve(dir, &value)),
            "TEMPLATE" => {
                check_go_template(&value);
                m.template = Some(value);
            }
            "SYSTEM" => m.system = Some(value),
            "PARAMETER" => {
                let (name, v) = value
                    .split_once(char::is_whitespace)
                    .unwrap_or_else(|| panic!("PARAMETER without a value: {line:?}"));
                assert!(PARAMETERS.contains(&name), "unknown PARAMETER {name:?}");
                let v = v.trim();
                if name == "stop" {
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "stop values are quoted: {v:?}"
                    );
                }
                m.parameters.push((name.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    assert_eq!(froms, 1, "one FROM, required");
    assert!(m.from.exists(), "FROM {}: no such file", m.from.display());
    for a in &m.adapters {
        assert!(a.exists(), "ADAPTER {}: no such file", a.display());
    }
    m
}

fn resolve(dir: &Path, value: &str) -> PathBuf {
    let p = PathBuf::from(value.trim());
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

/// `{{ … }}` actions closed, `if`/`range`/`with` balanced by `end`, variables documented.
fn check_go_template(t: &str) {
    let mut depth = 0i32;
    let mut rest = t;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..]
            .find("}}")
            .unwrap_or_else(|| panic!("TEMPLATE: an unclosed {{{{ in {t:?}"))
            + open;
        let action = rest[open + 2..close].trim_matches(|c: char| c == '-' || c.is_whitespace());
        rest = &rest[close + 2..];
        let word = action.split_whitespace().next().unwrap_or("");
        match word {
            "if" | "range" | "with" => depth += 1,
            "end" => depth -= 1,
            "else" => {}
            _ => {}
        }
        assert!(
            depth >= 0,
            "TEMPLATE: an {{{{ end }}}} without its opening in {t:?}"
        );
        for token in action.split_whitespace().filter(|w| w.starts_with('.')) {
            assert!(
                TEMPLATE_VARIABLES.contains(&token),
                "TEMPLATE: unknown variable {token}"
            );
        }
    }
    assert_eq!(
        depth, 0,
        "TEMPLATE: an if/range/with without its end in {t:?}"
    );
}
