//! The layering rule as data, and the test that holds the code to it: it reads every file under
//! `src/` and fails when a module uses a module of its own tier or of a tier above it (or more
//! than a narrower module may, or, in the pure domain, a dependency that is not pure), naming
//! the file, the line and the path. Imports (`use`, with `{..}` groups, `self` and `super`) and
//! paths written in code (`crate::x::y`, `super::super::x`) count alike; comments and string
//! literals do not. The crate's `# Layout` doc (lib.rs) tells the same order in words.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, top to bottom. A module may use the modules of the tiers below its own; the
/// modules of one tier do not use each other.
const TIERS: &[&[&str]] = &[
    // The binary: the `sluice` command (server, migrations, client commands).
    &["main"],
    // The composition root; the client commands (a REST/SSE client of a server).
    &["startup", "cli"],
    &["api"],
    &["services"],
    // The service boundary's error type: api and services use it, nothing below them.
    &["error"],
    &["actors"],
    &["engine"],
    &["connectors"],
    // The data layer and the live-event hub: used by services and actors, they know neither.
    &["repo", "events"],
    // The bottom: the metrics registry, logging, secrets, the configuration.
    &["metrics", "telemetry"],
    &["secrets", "config"],
    // Pure types and rules.
    &["domain"],
];

/// Modules that may use less than everything below them, with all they may use: handlers call
/// services (and read the event hub), never the actors, the engine, the connectors or the data
/// layer; the client shares only the domain's types and the configuration with the server.
const NARROWER: &[(&str, &[&str])] = &[
    (
        "api",
        &["services", "error", "events", "metrics", "domain", "config"],
    ),
    ("cli", &["domain", "config"]),
];

/// A known break of the rule: (module, the path prefix it may use, why it still does).
type Exception = (&'static str, &'static str, &'static str);

/// The known breaks of the rule. None now; the test fails when one listed here is not needed
/// any more.
const KNOWN_EXCEPTIONS: &[Exception] = &[];

/// What a pure layer may use of the package's dependencies (path prefixes): the domain's rules
/// may serialize, describe their schema, parse SQL and name Arrow types, never run anything
/// or touch a database, a runtime or the network.
const PURE: &[(&str, &[&str])] = &[(
    "domain",
    &[
        "serde",
        "serde_json",
        "chrono",
        "utoipa",
        "regex",
        "strsim",
        "glob",
        "datafusion::sql",
        "datafusion::arrow",
    ],
)];

/// This file: its examples are text, and it is a test, not a layer.
const THIS_MODULE: &str = "layers";

fn tier_of(module: &str) -> Option<usize> {
    TIERS.iter().position(|tier| tier.contains(&module))
}

/// Whether top-level module `from` may use top-level module `to`.
fn may_use(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    if let Some((_, only)) = NARROWER.iter().find(|(m, _)| *m == from) {
        return only.contains(&to);
    }
    matches!((tier_of(from), tier_of(to)), (Some(f), Some(t)) if f < t)
}

/// The exception of `exceptions` that allows `from` to use `path` (a path below `crate`), if any.
fn exception_for(from: &str, path: &[String], exceptions: &[Exception]) -> Option<usize> {
    let joined = path.join("::");
    exceptions.iter().position(|(module, prefix, _)| {
        *module == from && (joined == *prefix || joined.starts_with(&format!("{prefix}::")))
    })
}

// ---- reading Rust source ---------------------------------------------------------------------

/// `text` with comments and string and character literals blanked out (each becomes spaces;
/// line breaks stay, so line numbers do too).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match literal_or_comment_end(&chars, i) {
            Some(end) => {
                out.extend(chars[i..end].iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
                i = end;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where the comment or literal that starts at `i` ends (`None` when none starts there).
fn literal_or_comment_end(chars: &[char], i: usize) -> Option<usize> {
    let after_ident = i > 0 && is_ident_char(chars[i - 1]);
    match (chars[i], chars.get(i + 1).copied()) {
        ('/', Some('/')) => Some(
            chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n),
        ),
        ('/', Some('*')) => Some(block_comment_end(chars, i)),
        ('r', _) | ('b', Some('r')) if !after_ident => raw_string_end(chars, i),
        ('"', _) => Some(string_end(chars, i + 1)),
        ('\'', _) => char_literal_end(chars, i),
        _ => None,
    }
}

/// The end of the block comment at `i` (block comments nest).
fn block_comment_end(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// The end of the raw string (`r".."`, `r#".."#`, `br".."`) at `i`; `None` when `i` starts a
/// raw identifier (`r#type`) or a plain one.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let start = if chars[i] == 'b' { i + 2 } else { i + 1 };
    let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
    if chars.get(start + hashes) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let body = start + hashes + 1;
    Some(
        (body..chars.len())
            .find(|&j| chars[j..].starts_with(&closing))
            .map_or(chars.len(), |j| j + closing.len()),
    )
}

/// The end of the string whose text starts at `i` (after its opening quote).
fn string_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The end of the character literal at `i` (`'a'`, `'\n'`, `'\u{1F600}'`); `None` for a
/// lifetime or a label (`'a`), which has no closing quote.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    let escaped = chars.get(i + 1) == Some(&'\\');
    if !escaped && chars.get(i + 2) != Some(&'\'') {
        return None;
    }
    let from = if escaped { i + 3 } else { i + 2 };
    let close = (from..chars.len()).find(|&j| chars[j] == '\'')?;
    Some(close + 1)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
}

/// The tokens of code that `code_only` cleaned (only what paths are made of is told apart).
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let kind = if c == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_whitespace() {
            i += 1;
            continue;
        } else if is_ident_char(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A raw identifier (`r#type`) is the identifier.
            if word == "r" && chars.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            out.push(Token {
                kind: Kind::Ident(word),
                line,
            });
            continue;
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 1;
            Kind::PathSep
        } else {
            match c {
                '{' => Kind::Open,
                '}' => Kind::Close,
                ',' => Kind::Comma,
                ';' => Kind::Semi,
                '*' => Kind::Star,
                _ => Kind::Other,
            }
        };
        out.push(Token { kind, line });
        i += 1;
    }
    out
}

/// A path found in a file: as written, where, and whether it was imported or named in code.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    line: usize,
    written: Vec<String>,
    /// The module the path was written in (the file's module and the inline modules around it).
    module: Vec<String>,
    imported: bool,
}

fn ident(tokens: &[Token], i: usize) -> Option<&str> {
    match tokens.get(i).map(|t| &t.kind) {
        Some(Kind::Ident(name)) => Some(name),
        _ => None,
    }
}

fn kind(tokens: &[Token], i: usize) -> Option<&Kind> {
    tokens.get(i).map(|t| &t.kind)
}

/// Reads the use tree at `i` under `prefix`; every leaf path goes to `out`. Returns where the
/// tree ends.
fn use_tree(tokens: &[Token], mut i: usize, mut path: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    if kind(tokens, i) == Some(&Kind::PathSep) {
        i += 1;
    }
    loop {
        match kind(tokens, i) {
            Some(Kind::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if kind(tokens, i) == Some(&Kind::PathSep) {
                    i += 1;
                    continue;
                }
                if ident(tokens, i) == Some("as") {
                    i += 2;
                }
                out.push(path);
                return i;
            }
            Some(Kind::Star) => {
                out.push(path);
                return i + 1;
            }
            Some(Kind::Open) => {
                i += 1;
                loop {
                    match kind(tokens, i) {
                        None => return i,
                        Some(Kind::Close) => return i + 1,
                        Some(Kind::Comma) => i += 1,
                        Some(_) => {
                            let end = use_tree(tokens, i, path.clone(), out);
                            i = if end > i { end } else { i + 1 };
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}

/// The path in code that starts with `first` at `i` (`a::b::c`, up to what is not a segment:
/// `<`, `(`, `!`), and where it ends.
fn code_path(tokens: &[Token], i: usize, first: &str) -> (Vec<String>, usize) {
    let mut written = vec![first.to_string()];
    let mut j = i + 1;
    while kind(tokens, j) == Some(&Kind::PathSep) {
        let Some(name) = ident(tokens, j + 1) else { break };
        written.push(name.to_string());
        j += 2;
    }
    (written, j)
}

/// Every path that `text` (the file of module `module`) imports or names: into the crate,
/// into a dependency, or from a name in scope.
fn crate_paths(text: &str, module: &[String]) -> Vec<Found> {
    let tokens = tokens(&code_only(text));
    let mut found = Vec::new();
    // Inline modules (`mod tests { .. }`) open around the code, with the depth they opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let here = |inline: &[(String, usize)]| -> Vec<String> {
        module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect()
    };
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Kind::Ident(word) if word == "mod" => {
                if let (Some(name), Some(Kind::Open)) = (ident(&tokens, i + 1), kind(&tokens, i + 2)) {
                    inline.push((name.to_string(), depth + 1));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Kind::Ident(word) if word == "use" => {
                let line = tokens[i].line;
                let mut paths = Vec::new();
                let end = use_tree(&tokens, i + 1, Vec::new(), &mut paths);
                found.extend(paths.into_iter().map(|written| Found {
                    line,
                    written,
                    module: here(&inline),
                    imported: true,
                }));
                i = end.max(i + 1);
                continue;
            }
            // The start of a path (not a segment inside one).
            Kind::Ident(word)
                if kind(&tokens, i + 1) == Some(&Kind::PathSep)
                    && (i == 0 || kind(&tokens, i - 1) != Some(&Kind::PathSep)) =>
            {
                let (written, end) = code_path(&tokens, i, word);
                found.push(Found {
                    line: tokens[i].line,
                    written,
                    module: here(&inline),
                    imported: false,
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// `written` (a path in module `module`) as a path below `crate`; `None` when it does not
/// start in the crate (another crate, or a name in scope).
fn resolve(written: &[String], module: &[String]) -> Option<Vec<String>> {
    let (first, rest) = written.split_first()?;
    let mut path: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut up = module.to_vec();
            up.pop()?;
            up
        }
        _ => return None,
    };
    let mut rest = rest.iter().peekable();
    while rest.peek().is_some_and(|s| *s == "super") {
        rest.next();
        path.pop()?;
    }
    path.extend(rest.filter(|s| *s != "self").cloned());
    Some(path)
}

/// The module a file under `src/` holds (`lib.rs` the crate root, `main.rs` the binary).
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What breaks the rule in file `shown` (of module `module`, text `text`); every exception of
/// `exceptions` it uses goes to `excused`.
fn violations(
    shown: &str,
    module: &[String],
    text: &str,
    dependencies: &[String],
    exceptions: &[Exception],
    excused: &mut BTreeSet<usize>,
) -> Vec<String> {
    let Some(layer) = module.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for found in crate_paths(text, module) {
        let verb = if found.imported { "imports" } else { "uses" };
        let Some(path) = resolve(&found.written, &found.module) else {
            if let Some(why) = impure(layer, &found.written, dependencies) {
                let written = found.written.join("::");
                out.push(format!("{shown}:{} {verb} {written}: {why}", found.line));
            }
            continue;
        };
        let Some(target) = path.first() else { continue };
        if may_use(layer, target) {
            continue;
        }
        if let Some(n) = exception_for(layer, &path, exceptions) {
            excused.insert(n);
            continue;
        }
        let written = found.written.join("::");
        let resolved = format!("crate::{}", path.join("::"));
        let what = if written == resolved {
            resolved
        } else {
            format!("{written} ({resolved})")
        };
        let why = if tier_of(target).is_none() {
            format!("{target} is in no layer (add it to TIERS in src/layers.rs)")
        } else {
            format!("{layer} may not use {target}")
        };
        out.push(format!("{shown}:{} {verb} {what}: {why}", found.line));
    }
    out
}

/// Why `layer` may not use path `written` of a dependency (`None` when it may, or when the
/// path is no dependency's).
fn impure(layer: &str, written: &[String], dependencies: &[String]) -> Option<String> {
    let (_, allowed) = PURE.iter().find(|(m, _)| *m == layer)?;
    let root = written.first()?;
    if !dependencies.contains(root) {
        return None;
    }
    let joined = written.join("::");
    let ok = allowed
        .iter()
        .any(|prefix| joined == *prefix || joined.starts_with(&format!("{prefix}::")));
    (!ok).then(|| {
        format!(
            "{layer} is pure: of the dependencies it may use only {}",
            allowed.join(", ")
        )
    })
}

/// The package's dependencies as paths name them (`sea-orm` is `sea_orm`), from Cargo.toml.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]" || line.ends_with(".dependencies]");
            continue;
        }
        if !in_dependencies || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let name = key.trim().split('.').next().unwrap_or_default();
            if !name.is_empty() {
                names.push(name.replace('-', "_"));
            }
        }
    }
    names
}

/// The top-level modules lib.rs declares.
fn declared_modules(lib: &str) -> Vec<String> {
    let tokens = tokens(&code_only(lib));
    (0..tokens.len())
        .filter(|&i| ident(&tokens, i) == Some("mod") && kind(&tokens, i + 2) == Some(&Kind::Semi))
        .filter_map(|i| ident(&tokens, i + 1).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    fn module(path: &str) -> Vec<String> {
        path.split("::").map(str::to_string).collect()
    }

    #[test]
    fn every_module_uses_only_the_layers_below_it() {
        let root = src();
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        let manifest = std::fs::read_to_string(root.with_file_name("Cargo.toml")).unwrap();
        let dependencies = dependencies(&manifest);
        assert!(dependencies.contains(&"sea_orm".to_string()), "{dependencies:?}");
        let mut excused = BTreeSet::new();
        let mut problems = Vec::new();
        for file in &files {
            let relative = file.strip_prefix(&root).unwrap();
            let module = module_of(relative);
            if module.first().is_some_and(|m| m == THIS_MODULE) {
                continue;
            }
            let shown = format!("src/{}", relative.display());
            let text = std::fs::read_to_string(file).unwrap();
            problems.extend(violations(
                &shown,
                &module,
                &text,
                &dependencies,
                KNOWN_EXCEPTIONS,
                &mut excused,
            ));
        }
        for (n, (module, prefix, why)) in KNOWN_EXCEPTIONS.iter().enumerate() {
            if !excused.contains(&n) {
                problems.push(format!(
                    "the known exception {module} -> {prefix} ({why}) is not needed any more: remove it from src/layers.rs"
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "layers point down only (src/layers.rs):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_module_of_the_crate_has_a_layer() {
        let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
        let declared = declared_modules(&lib);
        assert!(declared.contains(&"domain".to_string()), "{declared:?}");
        for module in declared.iter().filter(|m| *m != THIS_MODULE) {
            assert!(
                tier_of(module).is_some(),
                "module {module} is in no layer: add it to TIERS"
            );
        }
        for name in TIERS.iter().flat_map(|t| t.iter()).filter(|m| **m != "main") {
            assert!(
                declared.iter().any(|m| m == name),
                "TIERS names {name}, which lib.rs does not declare"
            );
        }
    }

    #[test]
    fn the_order_is_top_to_bottom() {
        assert!(may_use("api", "services"));
        assert!(may_use("actors", "repo"));
        assert!(may_use("engine", "engine"));
        assert!(!may_use("services", "api"));
        assert!(
            !may_use("repo", "events"),
            "one tier's modules do not use each other"
        );
        assert!(!may_use("domain", "config"));
        assert!(may_use("cli", "domain"));
        assert!(!may_use("cli", "repo"), "the client is narrower than its tier");
        assert!(!may_use("api", "repo"), "handlers call services");
        assert!(
            !may_use("repo", "error"),
            "the boundary's error is not the data layer's"
        );
    }

    #[test]
    fn comments_strings_and_characters_are_not_code() {
        let text = "let a = \"crate::api\"; // crate::api\n/* crate::api /* nested */ */ let c = '\"';\n\
                    let r = r#\"crate::api \"still\" \"#; let l: &'static str = x; crate::repo::f();";
        let code = code_only(text);
        assert!(!code.contains("api"), "{code}");
        assert!(code.contains("crate::repo::f()"), "{code}");
        assert!(code.contains("'static"), "a lifetime stays: {code}");
        assert_eq!(code.lines().count(), text.lines().count());
    }

    #[test]
    fn use_groups_are_read_leaf_by_leaf() {
        let text = "use crate::{a::b, c::{d, e as f, self}, g::*};\nuse std::fmt;\nuse ::serde::Serialize;";
        let paths: Vec<String> = crate_paths(text, &module("x"))
            .into_iter()
            .map(|f| f.written.join("::"))
            .collect();
        assert_eq!(
            paths,
            [
                "crate::a::b",
                "crate::c::d",
                "crate::c::e",
                "crate::c::self",
                "crate::g",
                "std::fmt",
                "serde::Serialize"
            ]
        );
    }

    #[test]
    fn super_paths_resolve_from_the_module_they_are_written_in() {
        let m = module("actors::task");
        assert_eq!(
            resolve(&module("super::flow::FlowActor"), &m),
            Some(module("actors::flow::FlowActor"))
        );
        assert_eq!(
            resolve(&module("super::super::api::x"), &m),
            Some(module("api::x"))
        );
        assert_eq!(resolve(&module("self::y"), &m), Some(module("actors::task::y")));
        assert_eq!(resolve(&module("crate::c::self"), &m), Some(module("c")));
        assert_eq!(resolve(&module("std::fmt"), &m), None);
        // Inside `mod tests` of src/repo.rs, `super` is repo itself.
        let found = crate_paths(
            "mod tests {\n use super::*;\n}\nfn f() { super::api::g(); }",
            &module("repo"),
        );
        assert_eq!(resolve(&found[0].written, &found[0].module), Some(module("repo")));
        assert_eq!(
            resolve(&found[1].written, &found[1].module),
            Some(module("api::g"))
        );
    }

    #[test]
    fn a_violation_names_the_file_the_line_and_the_path() {
        let text = "//! doc\nuse crate::domain::store::DataStore;\nuse crate::{config, engine::{Engine, unit}};\n\
                    fn f() { let _ = crate::services::Services::new(); }\nmod tests { use super::super::super::api; }";
        let mut excused = BTreeSet::new();
        let found = violations(
            "src/connectors/x.rs",
            &module("connectors::x"),
            text,
            &[],
            KNOWN_EXCEPTIONS,
            &mut excused,
        );
        assert_eq!(
            found,
            [
                "src/connectors/x.rs:3 imports crate::engine::Engine: connectors may not use engine",
                "src/connectors/x.rs:3 imports crate::engine::unit: connectors may not use engine",
                "src/connectors/x.rs:4 uses crate::services::Services::new: connectors may not use services",
                "src/connectors/x.rs:5 imports super::super::super::api (crate::api): connectors may not use api",
            ]
        );
        // An exception, as the list would hold one while a break is being removed.
        let exceptions: &[Exception] = &[("connectors", "engine::errors", "an example")];
        let excused_use = violations(
            "src/connectors/y.rs",
            &module("connectors::y"),
            "use crate::engine::errors::clean_message;",
            &[],
            exceptions,
            &mut excused,
        );
        assert!(excused_use.is_empty());
        assert!(excused.contains(&0));
    }

    #[test]
    fn the_domain_uses_only_pure_dependencies() {
        let deps: Vec<String> = ["tokio", "datafusion", "serde", "config"]
            .map(String::from)
            .to_vec();
        let text = "use serde::Serialize;\nuse datafusion::arrow::datatypes::DataType;\n\
                    use datafusion::prelude::SessionContext;\nfn f() { tokio::fs::read(\"x\"); fmt::x(); }";
        let found = violations(
            "src/domain/x.rs",
            &module("domain::x"),
            text,
            &deps,
            KNOWN_EXCEPTIONS,
            &mut BTreeSet::new(),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0]
            .starts_with("src/domain/x.rs:3 imports datafusion::prelude::SessionContext: domain is pure"));
        assert!(found[1].starts_with("src/domain/x.rs:4 uses tokio::fs::read: domain is pure"));
        assert!(violations(
            "src/engine/x.rs",
            &module("engine::x"),
            text,
            &deps,
            KNOWN_EXCEPTIONS,
            &mut BTreeSet::new()
        )
        .is_empty());
        let manifest = "[package]\nname = \"x\"\n[dependencies]\nsea-orm.workspace = true\ntokio = { version = \"1\" }\n\
                        # a comment\n[dev-dependencies]\nproptest = \"1\"\n[target.'cfg(unix)'.dependencies]\nrustix = \"1\"";
        assert_eq!(dependencies(manifest), ["sea_orm", "tokio", "rustix"]);
    }

    #[test]
    fn files_hold_the_modules_their_paths_say() {
        assert_eq!(module_of(Path::new("lib.rs")), Vec::<String>::new());
        assert_eq!(module_of(Path::new("main.rs")), module("main"));
        assert_eq!(module_of(Path::new("api/mod.rs")), module("api"));
        assert_eq!(module_of(Path::new("domain/flow.rs")), module("domain::flow"));
        assert_eq!(
            declared_modules("pub mod a;\n#[cfg(test)]\nmod b;\nmod c { }"),
            ["a", "b"]
        );
    }
}
