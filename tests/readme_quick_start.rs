//! README's library quick start, the property-test part, run as it is shown; and a check that
//! every Rust block in README.md is the code of this file or of `examples/quick_start.rs`, so the
//! README cannot drift from code that compiles.
use dpaudit::testing::{adjacent_datasets, assert_sensitivity_at_most};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    // Adding one record to the data moves the clipped gradient sum of a fresh `logreg` model by
    // at most the clipping norm C: the sensitivity DP-SGD's noise is calibrated to.
    #[test]
    fn one_record_moves_the_clipped_sum_by_at_most_c(pair in adjacent_datasets(1..8, 28, 28)) {
        let c = 0.5;
        let sensitivity = assert_sensitivity_at_most("logreg", &pair, c).map_err(TestCaseError::fail)?;
        prop_assert!(sensitivity > 0.0);
    }
}

/// The Rust code blocks of a Markdown text (between "```rust" and "```" lines).
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn readme_rust_blocks_are_code_that_compiles() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let blocks = rust_blocks(&read("README.md"));
    assert_eq!(blocks.len(), 2, "README.md should show the accountant and the property test");
    let sources = [read("examples/quick_start.rs"), read("tests/readme_quick_start.rs")];
    for block in &blocks {
        assert!(
            sources.iter().any(|source| source.contains(block.as_str())),
            "this README block is in neither examples/quick_start.rs nor tests/readme_quick_start.rs:\n{block}"
        );
    }
}
