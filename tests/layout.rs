//! The source layout: no import circles between the files of `src/`. A file that names
//! another (`use crate::a::b`, `super::x`, a `crate::` path in code) depends on it; a module
//! and its own parent or children do not count (a parent declares its children and children
//! use their parent's shared items). A circle means two files can only be understood, and
//! changed, together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir` as its module path (`model::transformer`, `ops` for ops/mod.rs).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut p = prefix.to_vec();
            if !matches!(stem, "mod" | "lib" | "main") {
                p.push(stem.to_string());
            }
            out.insert(p.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A "//" inside a string literal (a URL) is kept: count the quotes before it.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `path` (`crate::a::b::Item`, `super::x`) names from `from`.
fn resolve(from: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = match segs[0] {
        "crate" => Vec::new(),
        "super" | "self" => from.split("::").filter(|s| !s.is_empty()).collect(),
        _ => return None,
    };
    while let Some(&first) = segs.first() {
        match first {
            "crate" | "self" => {}
            "super" => {
                base.pop();
            }
            _ => break,
        }
        segs.remove(0);
    }
    (0..=segs.len()).rev().find_map(|i| {
        let m: Vec<&str> = base
            .iter()
            .copied()
            .chain(segs[..i].iter().copied())
            .collect();
        let m = m.join("::");
        known.contains_key(&m).then_some(m)
    })
}

fn related(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

#[test]
fn no_file_of_src_imports_a_file_that_imports_it_back() {
    let mut known = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut known,
    );
    assert!(known.len() > 50, "found {} files under src/", known.len());
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &known {
        let code = code(text);
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &code[i..];
            let starts = ["crate::", "super::", "self::"]
                .iter()
                .any(|p| rest.starts_with(p));
            let boundary = i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':');
            if starts && boundary {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let path = rest[..end].trim_end_matches(':');
                if let Some(t) = resolve(m, path, &known) {
                    if !related(&t, m) {
                        edges.entry(m.clone()).or_default().insert(t);
                    }
                }
                i += end.max(1);
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    // A circle: a file that reaches itself again.
    let mut circles = Vec::new();
    for start in known.keys() {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(trail) = stack.pop() {
            let last = trail.last().unwrap();
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    let mut c = trail.clone();
                    c.push(start.clone());
                    circles.push(c.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push(t);
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between files of src/:\n{}",
        circles.join("\n")
    );
}

/// The longest a function outside tests may be, from its signature to its closing brace: a
/// longer one is a list of steps that wants names.
const LONGEST_FUNCTION: usize = 150;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The functions of a rustfmt-formatted file, before its test module, as (name, first line,
/// lines): rustfmt puts a body's closing brace alone on a line at the `fn`'s indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .position(|l| *l == "#[cfg(test)]")
        .unwrap_or(lines.len());
    let mut out = Vec::new();
    for i in 0..end {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(after) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at the first line of the fn's indentation ending in '{' (a body)
        // or ';' (a declaration in a trait).
        let Some(open) = (i..end).find(|&k| {
            let l = lines[k];
            (k == i || l.len() - l.trim_start().len() == indent)
                && (l.ends_with('{') || l.ends_with(';') || l.ends_with('}'))
        }) else {
            continue;
        };
        if !lines[open].ends_with('{') {
            continue; // a declaration, or a body on one line
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(last) = (open + 1..end).find(|&j| lines[j] == close) {
            out.push((name, i + 1, last - i + 1));
        }
    }
    out
}

#[test]
fn no_function_outside_tests_is_longer_than_150_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("xtask/src"), &mut files);
    let mut long = Vec::new();
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line, lines) in functions(&text) {
            seen += 1;
            if lines > LONGEST_FUNCTION {
                let shown = file.strip_prefix(root).unwrap_or(file).display();
                long.push(format!("{shown}:{line} {name}: {lines} lines"));
            }
        }
    }
    assert!(seen > 1000, "found {seen} functions in src/ and xtask/src/");
    assert!(
        long.is_empty(),
        "functions over {LONGEST_FUNCTION} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_scan_measures_what_rustfmt_writes() {
    let text = "fn one() {}\n\nimpl X {\n    pub(crate) fn two(\n        a: u32,\n    ) -> u32 {\n        let s = \"}\";\n        a\n    }\n\n    fn decl(&self) -> u32;\n}\n\nfn three<T>()\nwhere\n    T: Copy,\n{\n    f(|| {\n        1\n    });\n}\n#[cfg(test)]\nfn four() {\n}\n";
    assert_eq!(
        functions(text),
        vec![("two".to_string(), 4, 6), ("three".to_string(), 14, 8)]
    );
}
