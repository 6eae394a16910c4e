//! Repository checks over the workspace's own sources, run by `cargo test --workspace`
//! (paths are relative to the workspace root, two folders above this crate):
//!
//! - [`no_import_cycles_between_the_files_of_a_crate`]: within each crate's `src/`, the
//!   files (modules) that name each other through `crate::` paths form no cycle. The
//!   paths are read from `use` items (groups expanded), from paths in code and from
//!   macro arguments; comments, doc comments and strings never count. Test code is left
//!   out: `#[cfg(test)]` items and the files of `#[cfg(test)] mod x;`. A path names the
//!   file of its longest prefix that is a module (`crate::tls::intercept::run` →
//!   `tls/intercept.rs`, `crate::auth::Foo` → `auth/mod.rs`); paths to the crate root
//!   (`lib.rs`, `main.rs`) are ignored, since every module is declared there. A cycle
//!   means that none of its files can be read, tested or moved without the others.
//! - [`no_function_is_longer_than_150_lines`]: no `fn` (free, in an `impl` or a trait,
//!   test code included) in `crates/*/src`, `crates/*/tests`, `crates/*/benches`,
//!   `benches/` or `tests/` spans more than 150 lines from `fn` to its closing brace.
//!
//! Both parse the sources with `syn` (line numbers from proc-macro2's
//! `span-locations`), so a file that does not parse fails the check too.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};
use syn::{Attribute, Item};

/// The longest a function may be, in lines.
const MAX_FN_LINES: usize = 150;

/// A module of a crate: its path below the crate root (empty for the root).
type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, sorted (build output and hidden folders left out).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files.extend(rust_files(&path));
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The folders of `crates/`, sorted.
fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn parse(path: &Path) -> Result<syn::File, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    syn::parse_file(&text).map_err(|err| {
        let at = err.span().start();
        format!("{}:{}: does not parse: {err}", path.display(), at.line)
    })
}

// ---- import cycles ----

/// The module a file of `src/` holds: `tls/intercept.rs` and `tls/intercept/mod.rs`
/// → `tls::intercept`; `lib.rs`, `main.rs` → the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut module: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.len() == 1 && matches!(module[0].as_str(), "lib" | "main") {
        module.clear();
    } else if module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    module
}

fn is_cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The `crate::` paths one file names outside its test code (without the `crate`),
/// and the out-of-line `#[cfg(test)] mod x;` it declares.
#[derive(Debug, Default)]
struct CratePaths {
    paths: Vec<Vec<String>>,
    test_modules: Vec<String>,
}

impl CratePaths {
    fn of(file: &syn::File) -> Self {
        let mut found = Self::default();
        found.visit_file(file);
        found
    }

    fn push(&mut self, path: Vec<String>) {
        if path.first().is_some_and(|first| first == "crate") && path.len() > 1 {
            self.paths.push(path[1..].to_vec());
        }
    }
}

/// Every path a `use` tree names, groups expanded.
fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push([&prefix[..], &[n.ident.to_string()]].concat()),
        syn::UseTree::Rename(r) => out.push([&prefix[..], &[r.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_paths(t, prefix, out)),
    }
}

/// `crate::a::b` sequences in a macro's tokens (which `syn` does not parse).
fn macro_paths(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) => macro_paths(group.stream(), out),
            TokenTree::Ident(ident) if ident == "crate" => {
                let mut path = vec![ident.to_string()];
                while let [
                    TokenTree::Punct(a),
                    TokenTree::Punct(b),
                    TokenTree::Ident(next),
                    ..,
                ] = &tokens[i + 1..]
                    && a.as_char() == ':'
                    && b.as_char() == ':'
                {
                    path.push(next.to_string());
                    i += 3;
                }
                out.push(path);
            }
            _ => {}
        }
        i += 1;
    }
}

impl<'ast> Visit<'ast> for CratePaths {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_cfg_test(item_attrs(item)) {
            visit::visit_item(self, item);
        } else if let Item::Mod(m) = item
            && m.content.is_none()
        {
            self.test_modules.push(m.ident.to_string());
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut paths);
        paths.into_iter().for_each(|path| self.push(path));
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let mut paths = Vec::new();
        macro_paths(mac.tokens.clone(), &mut paths);
        paths.into_iter().for_each(|path| self.push(path));
        visit::visit_macro(self, mac);
    }
}

/// The strongly connected components of more than one node (Tarjan), each sorted.
fn cycles<N: Ord + Clone + Debug>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct Tarjan<'g, N> {
        edges: &'g BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        found: Vec<Vec<N>>,
    }
    impl<N: Ord + Clone> Tarjan<'_, N> {
        fn visit(&mut self, v: &N) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|w| w == v).unwrap();
                let mut component = self.stack.split_off(at);
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

/// The import graph of one crate's `src/`: file → the files it names (test files,
/// the root and itself left out).
fn import_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut modules: BTreeMap<Module, (String, CratePaths)> = BTreeMap::new();
    for file in rust_files(src) {
        let name = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        modules.insert(
            module_of(src, &file),
            (name, CratePaths::of(&parse(&file)?)),
        );
    }
    let test_modules: Vec<Module> = modules
        .iter()
        .flat_map(|(module, (_, paths))| {
            paths
                .test_modules
                .iter()
                .map(move |name| [&module[..], std::slice::from_ref(name)].concat())
        })
        .collect();
    modules.retain(|module, _| !test_modules.iter().any(|t| module.starts_with(t)));
    let mut graph = BTreeMap::new();
    for (module, (name, paths)) in &modules {
        let targets: BTreeSet<String> = paths
            .paths
            .iter()
            .filter_map(|path| {
                (1..=path.len())
                    .rev()
                    .find_map(|n| modules.get_key_value(&path[..n]))
            })
            .filter(|(target, _)| !target.is_empty() && *target != module)
            .map(|(_, (target_name, _))| target_name.clone())
            .collect();
        graph.insert(name.clone(), targets);
    }
    Ok(graph)
}

#[test]
fn no_import_cycles_between_the_files_of_a_crate() {
    let mut problems = Vec::new();
    for dir in crate_dirs() {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let crate_name = dir.file_name().unwrap().to_string_lossy().into_owned();
        match import_graph(&src) {
            Ok(graph) => problems.extend(
                cycles(&graph)
                    .into_iter()
                    .map(|files| format!("crates/{crate_name}/src: {}", files.join(", "))),
            ),
            Err(err) => problems.push(err),
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles between the files of a crate (each file names, through `crate::` \
         paths, one that leads back to it):\n{}",
        problems.join("\n")
    );
}

// ---- function length ----

/// Every function of a file longer than [`MAX_FN_LINES`], as `file:line name length`.
struct LongFunctions<'a> {
    file: &'a str,
    found: Vec<String>,
}

impl LongFunctions<'_> {
    fn check(&mut self, sig: &syn::Signature, body: &syn::Block) {
        let first = sig.fn_token.span.start().line;
        let last = body.brace_token.span.close().end().line;
        let lines = last + 1 - first;
        if lines > MAX_FN_LINES {
            self.found
                .push(format!("{}:{first} {} {lines}", self.file, sig.ident));
        }
    }
}

impl<'ast> Visit<'ast> for LongFunctions<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.check(&f.sig, &f.block);
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.check(&f.sig, &f.block);
        visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(body) = &f.default {
            self.check(&f.sig, body);
        }
        visit::visit_trait_item_fn(self, f);
    }
}

fn long_functions(file: &Path, shown_as: &str) -> Vec<String> {
    match parse(file) {
        Ok(parsed) => {
            let mut long = LongFunctions {
                file: shown_as,
                found: Vec::new(),
            };
            long.visit_file(&parsed);
            long.found
        }
        Err(err) => vec![err],
    }
}

#[test]
fn no_function_is_longer_than_150_lines() {
    let root = workspace();
    let mut dirs = vec![root.join("benches"), root.join("tests")];
    for dir in crate_dirs() {
        dirs.extend(["src", "tests", "benches"].map(|sub| dir.join(sub)));
    }
    let mut problems = Vec::new();
    for file in dirs.iter().flat_map(|dir| rust_files(dir)) {
        let shown = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        problems.extend(long_functions(&file, &shown));
    }
    assert!(
        problems.is_empty(),
        "functions longer than {MAX_FN_LINES} lines (file:line name lines); split them into \
         named steps:\n{}",
        problems.join("\n")
    );
}

// ---- the checks' own tests ----

fn graph(edges: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut graph: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for &(from, to) in edges {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    graph
}

#[test]
fn the_cycle_finder_finds_every_cycle() {
    let found = cycles(&graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("f", "a"),
    ]));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&vec!["a", "b", "c"]), "{found:?}");
    assert!(found.contains(&vec!["d", "e"]), "{found:?}");
}

#[test]
fn the_cycle_finder_passes_a_dag() {
    let found = cycles(&graph(&[("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn crate_paths_come_from_uses_code_and_macros_but_not_tests_or_comments() {
    let file = syn::parse_file(
        "//! See [`crate::doc_link`].\n\
         use crate::{a::b, c::{self, D as E}, f::*};\n\
         use std::fmt;\n\
         pub(crate) fn g() { crate::h::i(); let _ = \"crate::string\"; format!(\"{}\", crate::j::K); }\n\
         // crate::comment\n\
         #[cfg(test)] mod tests { use crate::z; }\n\
         #[cfg(test)] mod helpers;\n",
    )
    .unwrap();
    let found = CratePaths::of(&file);
    let paths: Vec<String> = found.paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        ["a::b", "c::self", "c::D", "f", "h::i", "j::K"],
        "{paths:?}"
    );
    assert_eq!(found.test_modules, ["helpers"]);
}
