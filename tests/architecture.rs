//! The shape of the library, checked: data flows one way, so no top-level module of
//! `src/` may reach itself again through the modules it imports (`crate::x` paths). The
//! job protocol (`jobs`) and the status sinks (`status`) exist so that the daemon and its
//! clients (the API, chat commands) need not import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/ entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/engine/x.rs` → `engine`);
/// `None` for the crate root files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::name` a text mentions, with `name` a module of the crate.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter_map(|(i, _)| {
            let rest = &text[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            modules.contains(name).then(|| name.to_string())
        })
        .collect()
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(
            imports(&text, &modules)
                .into_iter()
                .filter(|d| *d != module),
        );
    }
    graph
}

/// A path `from → … → from` through the graph, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().cloned().unwrap_or_default();
        for next in graph.get(&last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = import_graph();
    // The scan must see the modules it is about, or it proves nothing.
    for expected in [
        "jobs", "status", "daemon", "api", "engine", "catalog", "events",
    ] {
        assert!(
            graph.contains_key(expected),
            "no module `{expected}` found in src/"
        );
    }
    assert!(graph["daemon"].contains("jobs") && graph["api"].contains("jobs"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph
        .entry("api".into())
        .or_default()
        .insert("daemon".into());
    graph
        .entry("daemon".into())
        .or_default()
        .insert("events".into());
    graph
        .entry("events".into())
        .or_default()
        .insert("api".into());
    assert_eq!(
        cycle_through(&graph, "api"),
        Some(vec![
            "api".into(),
            "daemon".into(),
            "events".into(),
            "api".into()
        ])
    );
    if let Some(deps) = graph.get_mut("events") {
        deps.clear();
    }
    assert_eq!(cycle_through(&graph, "api"), None);
}
