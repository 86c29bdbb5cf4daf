//! The module rules of ARCHITECTURE.md ("Who may call whom"), checked on the source: a
//! change that breaks one fails here, naming the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Parts that must never import these others.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "web",
        &["delivery", "cli"],
        "the website answers requests; it writes outbox rows and never runs the workers or the \
         command line",
    ),
    (
        "delivery",
        &["cli"],
        "the background never depends on the owner's command line",
    ),
    (
        "mail",
        &["store", "web"],
        "mail renders and hands over messages; it does not read rows",
    ),
    (
        "bounces",
        &["web", "mail", "delivery", "cli"],
        "bounces read reports and record what they call for; they never send mail or answer \
         requests",
    ),
    (
        "store",
        &["config", "web", "mail", "delivery", "cli", "metrics"],
        "the store speaks SQL in its own types; the edges that know an outcome count it",
    ),
];

/// Parts that may import only these others (anything else of the crate is a violation).
const ONLY: &[(&str, &[&str], &str)] = &[
    (
        "bounces",
        &["domain", "store", "links", "config", "clock"],
        "reading a report is a pure function of its bytes, and recording it goes through the \
         store: no transport, no pages, no workers",
    ),
    (
        "metrics",
        &["domain", "store", "clock"],
        "metrics are counted by the web and the workers and read from the store at a scrape; \
         they know nothing of pages, mail or workers",
    ),
];

/// Imports that break a rule today, each with its way out. The list may only shrink: an entry
/// that no longer occurs fails the test until it is removed.
const KNOWN: &[(&str, &str, &str)] = &[];

#[derive(Debug, Clone)]
struct Import {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
    text: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `crate::NAME` outside comments, by the top-level part it is written in (`lib.rs` and
/// `main.rs` are the roots and may name anything).
fn imports(root: &Path) -> Vec<Import> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let part = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if part == "lib" || part == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != part {
                    found.push(Import {
                        from: part.clone(),
                        to: name,
                        file: Path::new("src").join(relative),
                        line: i + 1,
                        text: line.trim().to_owned(),
                    });
                }
            }
        }
    }
    found
}

/// What breaks a rule, one line each: `file:line: text: why`.
fn violations(imports: &[Import]) -> Vec<String> {
    let mut out = Vec::new();
    let known = |i: &Import| KNOWN.iter().any(|(f, t, _)| *f == i.from && *t == i.to);
    for i in imports {
        let forbidden = FORBIDDEN
            .iter()
            .find(|(from, to, _)| *from == i.from && to.contains(&i.to.as_str()))
            .filter(|_| !known(i))
            .map(|(_, _, why)| why);
        let not_allowed = ONLY
            .iter()
            .find(|(from, allowed, _)| *from == i.from && !allowed.contains(&i.to.as_str()))
            .map(|(_, _, why)| why);
        if let Some(why) = forbidden.or(not_allowed) {
            out.push(format!(
                "{}:{}: `{}` imports `{}` ({}): {why}",
                i.file.display(),
                i.line,
                i.from,
                i.to,
                i.text
            ));
        }
        if i.from == "domain" {
            out.push(format!(
                "{}:{}: `domain` imports `{}` ({}): domain imports nothing of the crate",
                i.file.display(),
                i.line,
                i.to,
                i.text
            ));
        }
        if i.from == "web" && i.to == "mail" && i.text.contains("Transport") {
            out.push(format!(
                "{}:{}: `web` uses the mail transport ({}): a request never sends mail, it \
                 writes an outbox row",
                i.file.display(),
                i.line,
                i.text
            ));
        }
    }
    for (from, to, _) in KNOWN {
        if !imports.iter().any(|i| i.from == *from && i.to == *to) {
            out.push(format!(
                "KNOWN lists `{from}` -> `{to}`, which no longer occurs: remove it"
            ));
        }
    }
    out.extend(cycles(imports));
    out
}

/// A loop of parts importing each other, with where each step is written.
fn cycles(imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Import>> = BTreeMap::new();
    for i in imports {
        edges
            .entry(i.from.as_str())
            .or_default()
            .entry(i.to.as_str())
            .or_insert(i);
    }
    let mut out = Vec::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first search for a path from `start` back to itself.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges
                .get(at)
                .map(|m| m.keys().copied().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if next == *start {
                    let mut cycle = path.clone();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported.insert(key) {
                        cycle.push(next);
                        let steps: Vec<String> = cycle
                            .windows(2)
                            .map(|w| {
                                let i = edges[w[0]][w[1]];
                                format!("{} -> {} ({}:{})", w[0], w[1], i.file.display(), i.line)
                            })
                            .collect();
                        out.push(format!("import loop: {}", steps.join(", ")));
                    }
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    out
}

#[test]
fn the_parts_keep_the_rules_of_who_may_call_whom() {
    let found = imports(&src());
    assert!(
        found.len() > 100,
        "the source was read: {} imports",
        found.len()
    );
    let broken = violations(&found);
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn a_planted_wrong_import_or_loop_is_named_with_its_file_and_line() {
    let mut found = imports(&src());
    let plant = |from: &str, to: &str, line: usize| Import {
        from: from.to_owned(),
        to: to.to_owned(),
        file: PathBuf::from(format!("src/{from}/planted.rs")),
        line,
        text: format!("use crate::{to}::Planted;"),
    };
    found.push(plant("web", "delivery", 7));
    found.push(plant("domain", "clock", 8));
    found.push(plant("store", "app", 9));
    found.push(plant("bounces", "schedule", 10));
    let broken = violations(&found);
    assert!(
        broken
            .iter()
            .any(|l| l.starts_with("src/web/planted.rs:7: `web` imports `delivery`")),
        "{broken:#?}"
    );
    assert!(
        broken
            .iter()
            .any(|l| l.starts_with("src/domain/planted.rs:8: `domain` imports `clock`")),
        "{broken:#?}"
    );
    assert!(
        broken
            .iter()
            .any(|l| l.starts_with("src/bounces/planted.rs:10: `bounces` imports `schedule`")),
        "{broken:#?}"
    );
    // app imports store; store importing app closes a loop.
    assert!(
        broken
            .iter()
            .any(|l| l.starts_with("import loop:") && l.contains("src/store/planted.rs:9")),
        "{broken:#?}"
    );
}
