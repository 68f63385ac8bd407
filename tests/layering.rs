//! The module order of `src/` (README, "Module map"): imports only point down.
//!
//! `files, journald, pci, vfio` < `config, host` < `kernel, plan` < `apply, domain, export, metrics` <
//! `broker, kubelet` < `watch` < `cli`. This test reads every `.rs` file under `src/` and fails when a module
//! refers to one above it (`crate::watch::…` from `domain`, `use crate::{broker, …}`, or a
//! `super::super::…` chain that climbs to the crate root and down into a higher module), and
//! when two sibling modules (two top-level modules of one level, or two files of one directory,
//! e.g. `host/scan/closure.rs` and `host/scan/pci.rs`) refer to each other: one of them must sit
//! below the other. Comment lines do not count; test code does (a test module is code too).
//! `fixtures` (test doubles, behind the `testing` feature) stands outside the order; `main.rs`
//! and `lib.rs` sit above it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The levels, lowest first; modules of one level are peers.
const ORDER: &[&[&str]] = &[
    &["files", "journald", "pci", "vfio"],
    &["config", "host"],
    &["kernel", "plan"],
    &["apply", "domain", "export", "metrics"],
    &["broker", "kubelet"],
    &["watch"],
    &["cli"],
];

fn level(module: &str) -> Option<usize> {
    ORDER.iter().position(|l| l.contains(&module))
}

/// One reference that breaks the order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The module path of a file under `src/`: `host/scan/pci.rs` is `[host, scan, pci]`,
/// `host/mod.rs` is `[host]`, `lib.rs` and `main.rs` are `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// Splits `a::b::c` (stopping at the first character that is neither an identifier nor `::`)
/// into its segments.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let id = ident(rest);
        if id.is_empty() {
            break;
        }
        out.push(id.to_string());
        rest = &rest[id.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The first segment of each path in a `{a::x, b, c::{y, z}}` group starting right after `{`.
fn group_heads(s: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                start = true;
                continue;
            }
            _ => {}
        }
        if start && depth == 0 && is_ident(c) {
            out.push(segments(&s[i..]));
            start = false;
        }
    }
    out
}

/// Every absolute module path this line refers to, from the module at `here`.
fn references(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let boundary = i == 0 || !is_ident(bytes[i - 1] as char) && bytes[i - 1] != b':';
        if boundary && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                out.extend(group_heads(group));
            } else {
                out.push(segments(after));
            }
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            let mut up = 0;
            let mut after = rest;
            while let Some(r) = after.strip_prefix("super::") {
                up += 1;
                after = r;
            }
            if up <= here.len() {
                let base = &here[..here.len() - up];
                let tails = match after.strip_prefix('{') {
                    Some(group) => group_heads(group),
                    None => vec![segments(after)],
                };
                for tail in tails {
                    let mut p = base.to_vec();
                    p.extend(tail);
                    out.push(p);
                }
            }
            i += rest.len() - after.len();
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out.retain(|p| !p.is_empty() && p.iter().all(|s| s != "*" && s != "self"));
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every violation of the order under `src`.
fn check(src: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    // Sibling edges: (parent, from, to) -> first place seen.
    let mut edges: BTreeMap<(Vec<String>, String, String), (String, usize)> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
        let here = module_path(&rel);
        let file = rel.display().to_string();
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Some(top) = here.first() else {
            continue; // lib.rs, main.rs: above every module.
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for target in references(line, &here) {
                let to = &target[0];
                if let (Some(a), Some(b)) = (level(top), level(to)) {
                    if b > a {
                        out.push(Violation {
                            file: file.clone(),
                            line: n + 1,
                            message: format!(
                                "`{top}` (level {a}) imports `{}` (level {b}), a module above it",
                                target.join("::")
                            ),
                        });
                    }
                }
                // The first place the two paths part: siblings under one parent.
                let common = here.iter().zip(&target).take_while(|(x, y)| x == y).count();
                if let (Some(from), Some(to)) = (here.get(common), target.get(common)) {
                    if from == "fixtures" || to == "fixtures" {
                        continue;
                    }
                    edges
                        .entry((here[..common].to_vec(), from.clone(), to.clone()))
                        .or_insert((file.clone(), n + 1));
                }
            }
        }
    }
    for ((parent, from, to), (file, line)) in &edges {
        if from < to && edges.contains_key(&(parent.clone(), to.clone(), from.clone())) {
            let (other_file, other_line) = &edges[&(parent.clone(), to.clone(), from.clone())];
            let scope = if parent.is_empty() {
                "crate".to_string()
            } else {
                parent.join("::")
            };
            out.push(Violation {
                file: file.clone(),
                line: *line,
                message: format!(
                    "siblings `{from}` and `{to}` (in {scope}) import each other (also {other_file}:{other_line}); one must sit below the other"
                ),
            });
        }
    }
    out.sort();
    out
}

#[test]
fn src_imports_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = check(&src);
    assert!(
        found.is_empty(),
        "the module order is broken ({} place(s)):\n{}",
        found.len(),
        found
            .iter()
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_place_in_the_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.contains(&"domain"), "{modules:?}");
    for m in modules {
        assert!(
            m == "fixtures" || level(m).is_some(),
            "src/lib.rs declares `{m}`, which has no level in ORDER (tests/layering.rs)"
        );
    }
}

// The checker itself, on planted trees.

fn plant(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

fn messages(dir: &tempfile::TempDir) -> Vec<String> {
    check(dir.path()).iter().map(|v| v.to_string()).collect()
}

#[test]
fn an_import_from_above_is_found() {
    let dir = plant(&[
        ("domain/mod.rs", "use crate::config::Config;\n"),
        (
            "domain/adopt.rs",
            "use crate::host::Roots;\nuse crate::watch::run_loop::Outcome;\n",
        ),
        ("broker/mod.rs", "use crate::domain::held::HeldDomain;\n"),
    ]);
    let found = messages(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("domain/adopt.rs:2:"), "{found:?}");
    assert!(found[0].contains("`watch::run_loop::Outcome`"), "{found:?}");
}

#[test]
fn grouped_imports_super_chains_and_files_and_export_count() {
    let dir = plant(&[
        ("files.rs", "use crate::{pci::PciAddress, export::Cdi};\n"),
        (
            "host/scan/pci.rs",
            "fn f() { let _ = super::super::super::apply::reconcile; }\n",
        ),
        ("export/mod.rs", "use crate::broker::Offer;\n"),
    ]);
    let found = messages(&dir);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found
        .iter()
        .any(|m| m.starts_with("files.rs:1:") && m.contains("`export::Cdi`")));
    assert!(found
        .iter()
        .any(|m| m.starts_with("host/scan/pci.rs:1:") && m.contains("`apply::reconcile`")));
    assert!(found.iter().any(|m| m.starts_with("export/mod.rs:1:")));
}

#[test]
fn comments_and_lower_imports_are_not_violations() {
    let dir = plant(&[
        (
            "domain/mod.rs",
            "//! The adapter lives in `crate::watch::domain_layer`.\n/// see [`crate::broker`]\nuse crate::vfio::Container;\n",
        ),
        ("cli/mod.rs", "use crate::{watch, broker, domain};\n"),
        ("lib.rs", "pub mod cli;\n"),
    ]);
    assert_eq!(messages(&dir), Vec::<String>::new());
}

#[test]
fn siblings_that_import_each_other_are_found() {
    let dir = plant(&[
        (
            "host/scan/closure.rs",
            "use super::read::Reader;\nfn f() { super::pci::virtfns(); }\n",
        ),
        ("host/scan/pci.rs", "use super::closure::Closure;\n"),
        ("host/scan/read.rs", "pub struct Reader;\n"),
        ("config/mod.rs", "use crate::host::Roots;\n"),
        ("host/mod.rs", "use crate::config::Config;\n"),
        ("kernel/mod.rs", "use crate::plan::Plan;\n"),
    ]);
    let found = messages(&dir);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|m| m.contains("siblings `closure` and `pci` (in host::scan)")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("siblings `config` and `host` (in crate)")),
        "{found:?}"
    );
}
