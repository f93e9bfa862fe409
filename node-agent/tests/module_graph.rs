//! The node agent's modules form a tree without cycles: every `crate::…` path in a source file
//! is an edge from its module to the module it names, and no chain of edges leads back to
//! where it started. A cycle fails this test with the chain; `--nocapture` prints the graph
//! (`docs/ARCHITECTURE.md` shows it).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `src/lib.rs` and `src/main.rs` the root.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return String::new();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments and string literals (a path in a doc comment is no import).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut previous = ' ';
                for next in chars.by_ref() {
                    if previous == '*' && next == '/' {
                        break;
                    }
                    previous = next;
                }
            }
            '"' => {
                let mut escaped = false;
                for next in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if next == '\\' {
                        escaped = true;
                    } else if next == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code before the file's `#[cfg(test)]` module: tests may reach anywhere.
fn without_tests(code: &str) -> &str {
    code.find("#[cfg(test)]\nmod tests")
        .map_or(code, |at| &code[..at])
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` is `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(&tree).to_owned()];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..].strip_suffix('}').unwrap_or(&tree[open + 1..]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| expand_use(part).into_iter().map(|rest| format!("{prefix}{rest}")))
        .collect()
}

/// Every `crate::…` and `super::…` path in the code, `use` trees expanded.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    let mut outside_use = String::new();
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        outside_use.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if boundary {
            found.extend(expand_use(&after[..end]));
            rest = &after[end..];
        } else {
            outside_use.push_str("use ");
            rest = after;
        }
    }
    outside_use.push_str(rest);
    found.extend(
        outside_use
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .filter(|word| word.starts_with("crate::") || word.starts_with("super::"))
            .map(str::to_owned),
    );
    found
}

/// Names a module re-exports from a child (`pub use child::Name;` in `a`): `a::Name` → the
/// child, so that naming an item through its parent's re-export is still an edge to the module
/// that defines it (otherwise a cycle through a re-export would go unseen).
type Reexports = BTreeMap<String, String>;

fn reexports_of(module: &str, code: &str, modules: &BTreeSet<String>) -> Reexports {
    let mut found = Reexports::new();
    let mut rest = code;
    while let Some(at) = rest.find("pub use ") {
        let after = &rest[at + 8..];
        let end = after.find(';').unwrap_or(after.len());
        for path in expand_use(&after[..end]) {
            let path = path.strip_prefix("self::").unwrap_or(&path);
            let Some((from, name)) = path.rsplit_once("::") else {
                continue;
            };
            let child = if module.is_empty() {
                from.to_owned()
            } else {
                format!("{module}::{from}")
            };
            if modules.contains(&child) {
                let key = if module.is_empty() {
                    name.to_owned()
                } else {
                    format!("{module}::{name}")
                };
                found.insert(key, child);
            }
        }
        rest = &after[end..];
    }
    found
}

/// The modules a file's code names: the longest known module prefix of every `crate::a::b…`
/// path (or the module a re-exported name comes from), and `super::…` resolved against the
/// file's own module.
fn references(
    module: &str,
    code: &str,
    modules: &BTreeSet<String>,
    reexports: &Reexports,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for path in paths(code) {
        let mut segments: Vec<String> = Vec::new();
        let mut rest = path.as_str();
        if let Some(after) = rest.strip_prefix("crate::") {
            rest = after;
        } else if rest.starts_with("super::") {
            segments = module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            while let Some(after) = rest.strip_prefix("super::") {
                segments.pop();
                rest = after;
            }
        } else {
            continue;
        }
        segments.extend(rest.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
        for len in (1..=segments.len()).rev() {
            let candidate = segments[..len].join("::");
            if let Some(defined_in) = reexports.get(&candidate) {
                found.insert(defined_in.clone());
                break;
            }
            if modules.contains(&candidate) {
                found.insert(candidate);
                break;
            }
        }
    }
    found.remove(module);
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("read a source file");
            (module_of(&src, file), code_only(&text))
        })
        .collect();
    let reexports: Reexports = sources
        .iter()
        .flat_map(|(module, code)| reexports_of(module, without_tests(code), &modules))
        .collect();
    sources
        .iter()
        .map(|(module, code)| {
            let edges = references(module, without_tests(code), &modules, &reexports);
            (module.clone(), edges)
        })
        .filter(|(module, _)| !module.is_empty())
        .collect()
}

/// A parent's edges count for its children and the other way round: `a` naming `b::c` and
/// `b::d` naming `a` is a cycle between `a` and `b`. Modules are compared by their top two
/// levels' ancestry, so each edge is between the two modules that are siblings.
fn sibling_edge(from: &str, to: &str) -> Option<(String, String)> {
    let a: Vec<&str> = from.split("::").collect();
    let b: Vec<&str> = to.split("::").collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == a.len() || common == b.len() {
        return None; // one contains the other
    }
    Some((a[..=common].join("::"), b[..=common].join("::")))
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node.as_str())
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_agents_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &graph {
        for to in targets {
            if let Some((a, b)) = sibling_edge(from, to) {
                siblings.entry(a).or_default().insert(b);
            }
        }
    }
    let printed: String = siblings
        .iter()
        .map(|(from, targets)| {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            format!("{from} -> {}\n", targets.join(", "))
        })
        .collect();
    print!("{printed}");
    if let Some(cycle) = find_cycle(&siblings) {
        let witnesses: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let files: Vec<&String> = graph
                    .iter()
                    .filter(|(from, targets)| {
                        (*from == &pair[0] || from.starts_with(&format!("{}::", pair[0])))
                            && targets
                                .iter()
                                .any(|to| to == &pair[1] || to.starts_with(&format!("{}::", pair[1])))
                    })
                    .map(|(from, _)| from)
                    .collect();
                format!("{} -> {} (in {files:?})", pair[0], pair[1])
            })
            .collect();
        panic!(
            "the agent's modules import in a cycle:\n  {}",
            witnesses.join("\n  ")
        );
    }
    // The graph in the architecture document is the one the code has.
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&doc_path).expect("read docs/ARCHITECTURE.md");
    assert!(
        doc.contains(&format!("```text\n{printed}```")),
        "docs/ARCHITECTURE.md's module graph is out of date; the agent's modules now import:\n{printed}"
    );
}

#[test]
fn the_checker_sees_a_cycle_and_reads_paths_only_from_code() {
    let modules: BTreeSet<String> = ["a", "b", "b::c", "b::d"].map(String::from).into();
    let none = Reexports::new();
    let code = code_only("// crate::a::x\nuse crate::b::c::Thing; let s = \"crate::a\";");
    assert_eq!(
        references("a", &code, &modules, &none),
        BTreeSet::from(["b::c".to_owned()])
    );
    let grouped = "use crate::{a::X, b::{c::Y, Z}};\nfn f() { crate::b::g() }";
    assert_eq!(
        references("x", grouped, &modules, &none),
        BTreeSet::from(["a".to_owned(), "b".to_owned(), "b::c".to_owned()])
    );
    assert_eq!(
        references("b::c", "use super::super::a::X;", &modules, &none),
        BTreeSet::from(["a".to_owned()])
    );
    // `b` re-exports `c::Thing`: `b::d` naming `super::Thing` depends on `b::c`, a sibling.
    let reexports = reexports_of("b", "mod c;\npub use c::{Thing, Other};", &modules);
    assert_eq!(reexports.get("b::Thing").map(String::as_str), Some("b::c"));
    assert_eq!(reexports.get("b::Other").map(String::as_str), Some("b::c"));
    assert_eq!(
        references("b::d", "use super::{Thing, d2};", &modules, &reexports),
        BTreeSet::from(["b::c".to_owned(), "b".to_owned()])
    );
    let edges = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
    assert_eq!(sibling_edge("b::c", "a"), Some(("b".to_owned(), "a".to_owned())));
    assert_eq!(sibling_edge("b::c", "b"), None);
}
