//! The README's promises: its Quick start is `examples/quick_start.rs` byte for byte, that
//! code works against a real server, and every relative link in README.md and docs/*.md
//! points to a file that exists.

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;

#[path = "../examples/quick_start.rs"]
#[allow(dead_code)] // its `main` is the example's, not the test's
mod quick_start;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The text between `<!-- quick_start.rs -->` and `<!-- /quick_start.rs -->` in README.md,
/// inside its ```rust fence.
fn readme_quick_start() -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let (_, rest) = readme
        .split_once("<!-- quick_start.rs -->\n")
        .expect("README.md has the `<!-- quick_start.rs -->` marker");
    let (block, _) = rest
        .split_once("<!-- /quick_start.rs -->")
        .expect("README.md has the `<!-- /quick_start.rs -->` marker");
    let code = block
        .trim_end()
        .strip_prefix("```rust\n")
        .and_then(|b| b.strip_suffix("```"))
        .expect("between the markers: one ```rust fence and nothing else");
    code.to_owned()
}

#[test]
fn quick_start_in_readme_is_the_example() {
    let example = include_str!("../examples/quick_start.rs");
    assert!(
        readme_quick_start() == example,
        "README.md's Quick start differs from examples/quick_start.rs: copy the file \
         between the README's `<!-- quick_start.rs -->` markers"
    );
}

#[test]
fn quick_start_fetches_from_a_loopback_server() {
    let server = TestServer::start();
    let rt = common::current_thread_rt();
    let body = common::block_on_guarded(&rt, quick_start::fetch(&server.url("/")))
        .expect("the quick start's fetch");
    assert_eq!(body, "hello");
}

/// Every `](target)` in `text` whose target is a relative path (no scheme, not an anchor),
/// without its `#fragment`.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        let path = target.split('#').next().unwrap_or_default();
        if !path.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(path.to_owned());
        }
    }
    links
}

#[test]
fn relative_links_resolve() {
    let root = Path::new(ROOT);
    let mut files: Vec<PathBuf> = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/");
    for entry in docs {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("markdown file");
        let dir = file.parent().expect("a file's folder");
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                let from = file.strip_prefix(root).unwrap_or(file);
                broken.push(format!("{}: {link}", from.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to missing files:\n{}",
        broken.join("\n")
    );
}
