//! The gateway's source layout, checked: no import circle between its modules, no file over
//! 600 lines without a reason in its opening comment, no function over 80 lines, and no
//! protobuf type in the domain or the sagas.
//!
//! The module graph is read from the source text, after comments, string literals and
//! `#[cfg(test)]` items are blanked out. Module `a` depends on `b` when `a` names a path into
//! `b` (`crate::b::…`, `super::…`, a child module by its bare name, `use` groups expanded), or
//! when `a` calls a method of `Gateway` that `b` defines (`self.m(…)` inside `impl Gateway`,
//! `gw.m(…)`, `Gateway::m(…)` anywhere): `Gateway` is implemented in several modules, and a
//! circle through its methods is a circle all the same. A module's parent declaring it
//! (`mod b;`) is not a dependency. Run with `--nocapture` to see the graph.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
/// What the opening comment of a longer file must say.
const LONG_FILE_MARK: &str = "Longer than 600 lines:";

/// One source file as a module.
struct Module {
    path: String,
    file: PathBuf,
    raw: String,
    /// Comments, strings and test items blanked out (same length, same lines).
    code: String,
}

fn modules() -> Vec<Module> {
    // Another tree can be checked too (an older commit's, to compare).
    let root = std::env::var_os("GATEWAY_LAYOUT_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    );
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter(|f| f.file_name().unwrap() != "main.rs")
        .map(|file| {
            let rel = file.strip_prefix(&root).unwrap().with_extension("");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
                segs.pop();
            }
            let path = if segs.is_empty() {
                "crate".to_owned()
            } else {
                segs.join("::")
            };
            let raw = std::fs::read_to_string(&file).unwrap();
            let code = without_tests(&blank_comments_and_strings(&raw));
            Module {
                path,
                file,
                raw,
                code,
            }
        })
        .collect()
}

/// Replaces comments and the contents of string and char literals with spaces, keeping
/// newlines, so that line numbers and brace matching still hold.
fn blank_comments_and_strings(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                out.push(blank(b[i]));
                i += 1;
            }
            out.push_str("  ");
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_start(&b, i) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == '#').count();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = i + 2 + hashes;
            out.push_str(&" ".repeat(body_start - i));
            i = body_start;
            while i < b.len() && !b[i..].iter().take(close.len()).copied().eq(close.chars()) {
                out.push(blank(b[i]));
                i += 1;
            }
            out.push_str(&" ".repeat(close.len()));
            i += close.len();
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && is_char_literal(&b, i) {
            out.push('\'');
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_raw_start(b: &[char], i: usize) -> bool {
    let ident_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    let hashes = b[i + 1..].iter().take_while(|&&c| c == '#').count();
    !ident_before && b.get(i + 1 + hashes) == Some(&'"')
}

/// `'x'` or `'\n'`, not a lifetime `'a`.
fn is_char_literal(b: &[char], i: usize) -> bool {
    matches!(
        (b.get(i + 1), b.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// Blanks every item marked `#[cfg(test)]` (test modules and test-only helpers).
fn without_tests(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let text: String = out.iter().collect();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let start = from + at;
        let chars_before = text[..start].chars().count();
        let Some(end) = item_end(&out, chars_before) else {
            break;
        };
        for c in &mut out[chars_before..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        from = start + 1;
    }
    out.into_iter().collect()
}

/// The end (exclusive) of the item starting at `start`: its matching `}`, or its `;`.
fn item_end(b: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in b.iter().enumerate().skip(start) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k + 1);
                }
            }
            ';' if depth == 0 => return Some(k + 1),
            _ => {}
        }
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path of a `use` tree or expression starting at `s` (after `crate::`), expanded.
fn paths_from(s: &[char]) -> Vec<Vec<String>> {
    let (paths, _) = tree(s, 0);
    paths
}

fn tree(s: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while s.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        if s.get(i) == Some(&'{') {
            i += 1;
            let mut all = Vec::new();
            loop {
                while s.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                    i += 1;
                }
                if s.get(i) == Some(&'}') || i >= s.len() {
                    return (
                        all.into_iter()
                            .map(|p: Vec<String>| {
                                let mut full = prefix.clone();
                                full.extend(p.into_iter().filter(|x| x != "self"));
                                full
                            })
                            .collect(),
                        i + 1,
                    );
                }
                let (sub, next) = tree(s, i);
                all.extend(sub);
                i = next;
            }
        }
        let start = i;
        while s.get(i).copied().is_some_and(is_ident) {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].iter().collect());
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The module a path names (its longest prefix that is a module), if any.
fn resolve(path: &[String], known: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|p| known.contains(p))
}

/// Paths this module names, as absolute segment lists: `crate::`, `super::` and `self::`
/// paths, and paths through a module in scope by its bare name (a child module, or a module
/// brought in by `use`).
fn named_paths(m: &Module, known: &BTreeSet<String>) -> Vec<Vec<String>> {
    let segs: Vec<String> = if m.path == "crate" {
        Vec::new()
    } else {
        m.path.split("::").map(str::to_owned).collect()
    };
    // Bare names in scope that are modules: the children, then what `use` brings in.
    let mut scope: BTreeMap<String, Vec<String>> = known
        .iter()
        .filter_map(|k| {
            let rest = if segs.is_empty() {
                Some(k.as_str())
            } else {
                k.strip_prefix(&format!("{}::", m.path))
            }?;
            (!rest.contains("::") && rest != "crate")
                .then(|| (rest.to_owned(), k.split("::").map(str::to_owned).collect()))
        })
        .collect();
    let anchored = scan(m, &segs, &BTreeMap::new());
    for p in &anchored {
        if known.contains(&p.join("::"))
            && let Some(last) = p.last()
        {
            scope.insert(last.clone(), p.clone());
        }
    }
    let mut out = anchored;
    out.extend(scan(m, &segs, &scope));
    out
}

/// Paths anchored at `crate`, `super` or `self`, and (with `scope`) at bare module names.
fn scan(m: &Module, segs: &[String], scope: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let b: Vec<char> = m.code.chars().collect();
    let inline_mods = inline_modules(&b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == ':' || b[i - 1] == '.');
        if !boundary || !is_ident(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word: String = b[start..i].iter().collect();
        if b.get(i) != Some(&':') || b.get(i + 1) != Some(&':') {
            continue;
        }
        // `super` in an inline `mod x { … }` is the file's own module.
        let inline = inline_mods.iter().any(|&(a, z)| a <= start && start < z);
        let base: Option<Vec<String>> = match word.as_str() {
            "crate" if scope.is_empty() => Some(Vec::new()),
            "super" if scope.is_empty() && inline => Some(segs.to_vec()),
            "super" if scope.is_empty() && !segs.is_empty() => {
                Some(segs[..segs.len() - 1].to_vec())
            }
            "self" if scope.is_empty() => Some(segs.to_vec()),
            w => scope.get(w).cloned(),
        };
        let Some(base) = base else { continue };
        for p in paths_from(&b[i + 2..]) {
            let mut full = base.clone();
            full.extend(p);
            out.push(full);
        }
    }
    out
}

/// The spans of inline `mod x { … }` blocks.
fn inline_modules(b: &[char]) -> Vec<(usize, usize)> {
    let text: String = b.iter().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("mod ") {
        let byte = from + at;
        let pos = text[..byte].chars().count();
        from = byte + 1;
        if pos > 0 && is_ident(b[pos - 1]) {
            continue;
        }
        let name_end = (pos + 4..b.len())
            .find(|&k| !is_ident(b[k]))
            .unwrap_or(b.len());
        let after = (name_end..b.len()).find(|&k| !b[k].is_whitespace());
        if let Some(open) = after.filter(|&k| b[k] == '{')
            && let Some(end) = item_end(b, open)
        {
            out.push((open, end));
        }
    }
    out
}

/// `impl Gateway` blocks of a module: (start, end) char offsets of their bodies.
fn gateway_impls(code: &[char]) -> Vec<(usize, usize)> {
    let text: String = code.iter().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("impl Gateway {") {
        let start_byte = from + at;
        let start = text[..start_byte].chars().count();
        let open = start + "impl Gateway ".len();
        if let Some(end) = item_end(code, open) {
            out.push((open, end));
        }
        from = start_byte + 1;
    }
    out
}

/// Names of the methods defined directly in `impl Gateway` blocks.
fn gateway_methods(code: &[char]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (open, end) in gateway_impls(code) {
        let mut depth = 0;
        let mut k = open;
        while k < end {
            match code[k] {
                '{' => depth += 1,
                '}' => depth -= 1,
                'f' if depth == 1
                    && code.get(k + 1) == Some(&'n')
                    && code.get(k + 2) == Some(&' ')
                    && !is_ident(code[k - 1]) =>
                {
                    let name: String = code[k + 3..].iter().take_while(|&&c| is_ident(c)).collect();
                    names.insert(name);
                }
                _ => {}
            }
            k += 1;
        }
    }
    names
}

/// Gateway methods this module calls: `self.m(` inside its `impl Gateway` blocks, and
/// `gw.m(`, `self.gw.m(`, `Gateway::m(` anywhere.
fn gateway_calls(code: &[char], methods: &BTreeSet<String>) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    let impls = gateway_impls(code);
    let text: String = code.iter().collect();
    for m in methods {
        for receiver in ["self.", "gw.", "Gateway::"] {
            let needle = format!("{receiver}{m}(");
            let mut from = 0;
            while let Some(at) = text[from..].find(&needle) {
                let byte = from + at;
                let pos = text[..byte].chars().count();
                let boundary = pos == 0 || !is_ident(code[pos - 1]);
                let inside_impl = impls.iter().any(|&(a, b)| a <= pos && pos < b);
                let counts = match receiver {
                    "self." => inside_impl && boundary,
                    "gw." => boundary || text[..byte].ends_with("self."),
                    _ => boundary,
                };
                if counts {
                    calls.insert(m.clone());
                }
                from = byte + 1;
            }
        }
    }
    calls
}

fn graph(mods: &[Module]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<String> = mods.iter().map(|m| m.path.clone()).collect();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for m in mods {
        let code: Vec<char> = m.code.chars().collect();
        for name in gateway_methods(&code) {
            owner.insert(name, m.path.clone());
        }
    }
    let all_methods: BTreeSet<String> = owner.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in mods {
        let deps = edges.entry(m.path.clone()).or_default();
        for p in named_paths(m, &known) {
            let target = resolve(&p, &known).unwrap_or_else(|| "crate".to_owned());
            if target != m.path {
                deps.insert(target);
            }
        }
        let code: Vec<char> = m.code.chars().collect();
        for call in gateway_calls(&code, &all_methods) {
            let target = &owner[&call];
            if *target != m.path {
                deps.insert(target.clone());
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let mods = modules();
    let edges = graph(&mods);
    println!("module graph (module -> the modules it uses):");
    for (m, deps) in &edges {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("  {m} -> {}", deps.join(", "));
    }
    let found = circles(&edges);
    for c in &found {
        println!("circle: {}", c.join(" <-> "));
    }
    println!("circles: {}", found.len());
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn no_long_file_without_a_reason_and_no_long_function() {
    let mut problems = Vec::new();
    for m in modules() {
        let lines = m.raw.lines().count();
        let opening: String = m
            .raw
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ");
        if lines > MAX_FILE_LINES && !opening.contains(LONG_FILE_MARK) {
            problems.push(format!(
                "{}: {lines} lines, and its opening comment does not say {LONG_FILE_MARK:?}",
                m.file.display()
            ));
        }
        let code: Vec<char> = m.code.chars().collect();
        let mut k = 0;
        while k + 3 < code.len() {
            let is_fn = code[k] == 'f'
                && code[k + 1] == 'n'
                && code[k + 2] == ' '
                && (k == 0 || !is_ident(code[k - 1]))
                && is_ident(code[k + 3]);
            if is_fn {
                let body = (k..code.len()).find(|&j| code[j] == '{' || code[j] == ';');
                if let Some(open) = body.filter(|&j| code[j] == '{')
                    && let Some(end) = item_end(&code, open)
                {
                    let first = code[..k].iter().filter(|&&c| c == '\n').count() + 1;
                    let last = code[..end].iter().filter(|&&c| c == '\n').count() + 1;
                    let name: String = code[k + 3..].iter().take_while(|&&c| is_ident(c)).collect();
                    if last - first + 1 > MAX_FN_LINES {
                        problems.push(format!(
                            "{}:{first}: fn {name} has {} lines",
                            m.file.display(),
                            last - first + 1
                        ));
                    }
                }
            }
            k += 1;
        }
    }
    for p in &problems {
        println!("{p}");
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn domain_and_sagas_take_no_protobuf_type() {
    let mut problems = Vec::new();
    for m in modules() {
        let banned: &[&str] = if m.path.starts_with("domain") {
            &["weft_proto"]
        } else if m.path.starts_with("sagas") {
            &["weft_proto::gateway", "gateway::v1"]
        } else {
            &[]
        };
        for b in banned {
            if m.code.contains(b) {
                problems.push(format!("{} uses {b}", m.file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
