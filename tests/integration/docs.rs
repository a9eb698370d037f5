//! Generated documentation stays in step with the code that generates it.

#[test]
fn troubleshooting_doc_matches_the_error_code_table() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/troubleshooting.md"
    ))
    .expect("docs/troubleshooting.md exists");
    assert!(
        committed == kube_iap::error_codes::troubleshooting_markdown(),
        "docs/troubleshooting.md is out of date: run `cargo run -- codes > docs/troubleshooting.md`"
    );
}

#[test]
fn every_code_is_in_the_troubleshooting_table_once() {
    let doc = kube_iap::error_codes::troubleshooting_markdown();
    for row in kube_iap::error_codes::TABLE {
        let marker = format!("\n| {} |", row.number);
        assert_eq!(doc.matches(&marker).count(), 1, "code {}", row.number);
    }
}
