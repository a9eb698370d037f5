//! The docs stay true: generated pages match the code that generates them, every manifest in
//! `docs/` is valid for the kind it claims, and every `kube-iap` command line in them parses.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

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

/// The kinds users write for their apps, which kube-iap reads.
const USER_KINDS: [&str; 10] = [
    "IapPolicy",
    "OAuthClient",
    "Secret",
    "Service",
    "Ingress",
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "ReferenceGrant",
];

/// A fenced block of a Markdown file under `docs/`.
struct Block {
    file: String,
    line: usize,
    language: String,
    text: String,
    /// The fence's indentation, removed from every line (blocks inside list items).
    indent: usize,
}

fn doc_blocks() -> Vec<Block> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    blocks_of(&files)
}

fn blocks_of(files: &[std::path::PathBuf]) -> Vec<Block> {
    let mut blocks = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let mut open: Option<Block> = None;
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            match (&mut open, trimmed.strip_prefix("```")) {
                (None, Some(language)) => {
                    open = Some(Block {
                        file: file.clone(),
                        line: number + 1,
                        language: language.trim().to_string(),
                        text: String::new(),
                        indent: line.len() - trimmed.len(),
                    })
                }
                (Some(_), Some("")) => blocks.push(open.take().unwrap()),
                (Some(block), _) => {
                    let indent = (line.len() - trimmed.len()).min(block.indent);
                    block.text.push_str(&line[indent..]);
                    block.text.push('\n');
                }
                (None, None) => {}
            }
        }
        assert!(open.is_none(), "{file}: a code block is never closed");
    }
    blocks
}

/// Every field of `written` is one the type knows: it survives a round trip through it.
fn assert_known_fields(written: &Value, round_tripped: &Value, path: &str, at: &str) {
    match (written, round_tripped) {
        (Value::Object(fields), Value::Object(known)) => {
            for (name, value) in fields {
                let field = format!("{path}.{name}");
                let known = known
                    .get(name)
                    .unwrap_or_else(|| panic!("{at}: {field} is not a field of the CRD"));
                assert_known_fields(value, known, &field, at);
            }
        }
        (Value::Array(items), Value::Array(known)) => {
            for (index, (item, known)) in items.iter().zip(known).enumerate() {
                assert_known_fields(item, known, &format!("{path}[{index}]"), at);
            }
        }
        _ => {}
    }
}

fn assert_custom_resource<T>(document: &Value, at: &str)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_path_to_error::deserialize(document.clone())
        .unwrap_or_else(|error| panic!("{at}: {error}"));
    let round_tripped = serde_json::to_value(typed).unwrap();
    assert_known_fields(document, &round_tripped, "", at);
}

#[test]
fn every_manifest_in_the_docs_is_valid_for_the_kind_it_claims() {
    use kube_iap::api::{IapPolicy, OAuthClient};

    let blocks = doc_blocks();
    let yaml: Vec<&Block> = blocks.iter().filter(|b| b.language == "yaml").collect();
    assert!(yaml.len() >= 5, "the docs show their manifests");
    let (mut built_in, mut helm_values, mut ours) = (Vec::new(), 0, String::new());
    for block in &yaml {
        let at = format!("docs/{} line {}", block.file, block.line);
        let documents = crate::chart::documents(&block.text);
        if documents.iter().all(|d| d.get("kind").is_none()) {
            // Helm values: the chart must render with them.
            let values = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(values.path(), &block.text).unwrap();
            let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kube-iap");
            let rendered = Command::new(crate::chart::tool("helm"))
                .args(["template", "kube-iap", chart, "-f"])
                .arg(values.path())
                .output()
                .unwrap();
            assert!(
                rendered.status.success(),
                "{at}: {}",
                String::from_utf8_lossy(&rendered.stderr)
            );
            helm_values += 1;
            continue;
        }
        for document in documents {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            assert!(
                document["apiVersion"].is_string(),
                "{at}: {kind} lacks apiVersion"
            );
            assert!(
                document["metadata"]["name"].is_string() || kind == "Kustomization",
                "{at}: {kind} lacks metadata.name"
            );
            match kind.as_str() {
                "IapPolicy" => assert_custom_resource::<IapPolicy>(&document, &at),
                "OAuthClient" => assert_custom_resource::<OAuthClient>(&document, &at),
                "Kustomization" => {
                    for field in document.as_object().unwrap().keys() {
                        assert!(
                            ["apiVersion", "kind", "resources", "images", "namespace"]
                                .contains(&field.as_str()),
                            "{at}: Kustomization field {field}"
                        );
                    }
                }
                // The Gateway API's kinds are judged by its CRDs, on a real API server (below).
                "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant" => {}
                _ => built_in.push(document.clone()),
            }
            if USER_KINDS.contains(&kind.as_str()) {
                ours.push_str(&serde_yaml::to_string(&document).unwrap());
                ours.push_str("---\n");
            }
        }
    }
    assert!(
        helm_values >= 1,
        "the install guide's values file is checked"
    );

    // The objects kube-iap reads, read as kube-iap reads them: none is unreadable or invalid.
    let manifests = kube_iap::source::files::parse(&[(std::path::PathBuf::from("docs"), ours)]);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let mut index = kube_iap::index::Index::default();
    for resource in manifests.resources {
        index.apply(resource);
    }
    // Gateway API objects: well-formed as written (what they reference may be absent).
    const MISWRITTEN: [&str; 11] = [
        "UnsupportedProtocol",
        "PortUnavailable",
        "UnsupportedValue",
        "HostnameConflict",
        "ProtocolConflict",
        "InvalidRouteKinds",
        "NotAllowedByListeners",
        "NoMatchingListenerHostname",
        "NoMatchingParent",
        "InvalidKind",
        "NoPolicy",
    ];
    let snapshot = index.build();
    for status in &snapshot.statuses {
        let shown = status.api_status.as_deref().unwrap_or("");
        for reason in MISWRITTEN {
            assert!(
                !shown.contains(&format!("\"reason\":\"{reason}\"")),
                "{} {}: {reason} in {shown}",
                status.kind.as_str(),
                status.key
            );
        }
    }
    for status in snapshot.statuses {
        assert!(
            !status.reason.starts_with("Invalid") || status.api_status.is_some(),
            "{} {}: {}",
            status.kind.as_str(),
            status.key,
            status.message
        );
    }

    // Built-in kinds: strictly against the Kubernetes schemas.
    let stream: String = built_in
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    crate::chart::assert_kubernetes_accepts("docs", &stream);
}

/// Every manifest a user is shown — the YAML blocks of `docs/` and README.md, and the demo's
/// `examples/manifests` — is accepted by a real API server with the CRDs installed.
#[tokio::test]
async fn every_documented_manifest_is_accepted_by_a_real_api_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut markdown = vec![root.join("README.md")];
    markdown.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "md")),
    );
    for block in blocks_of(&markdown) {
        if block.language == "yaml" {
            sources.push((format!("{} line {}", block.file, block.line), block.text));
        }
    }
    for entry in std::fs::read_dir(root.join("examples/manifests")).unwrap() {
        let path = entry.unwrap().path();
        sources.push((
            path.display().to_string(),
            std::fs::read_to_string(&path).unwrap(),
        ));
    }
    let testbed = crate::support::testbed::shared();
    let namespace = testbed.namespace("documented").await;
    let (mut applied, mut refused) = (0, Vec::new());
    for (at, text) in sources {
        for document in crate::chart::documents(&text) {
            // Helm values, Kustomizations and the install's own objects are checked elsewhere
            // (the chart tests); here: what users write for their apps. EndpointSlices are not
            // written by users in a cluster (its controller makes them from Pods); the demo's
            // stand-in points at 127.0.0.1, which only local mode accepts.
            let kind = document["kind"].as_str().unwrap_or_default();
            if !USER_KINDS.contains(&kind) {
                continue;
            }
            let yaml = serde_yaml::to_string(&document).unwrap();
            match testbed.try_apply(&namespace, &yaml).await.remove(0) {
                Ok(_) => applied += 1,
                Err(error) => refused.push(format!("{at}: {kind}: {error}")),
            }
        }
    }
    assert!(refused.is_empty(), "{refused:#?}");
    assert!(applied >= 10, "only {applied} documented manifests found");
}

/// The arguments of a shell line up to the first pipe, redirect or list operator, with quotes
/// removed. Variables stay as written: they are values, and only flags matter here.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '|' | '>' | '<' | ';' | '&' | '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn shell_words_stop_at_pipes_and_keep_quoted_text() {
    assert_eq!(
        shell_words(r#"kube-iap tunnel --url "https://%h" --port 22 | cat"#),
        ["kube-iap", "tunnel", "--url", "https://%h", "--port", "22"]
    );
    assert_eq!(
        shell_words("ssh -o ProxyCommand='kube-iap tunnel --stdio' me@host"),
        [
            "ssh",
            "-o",
            "ProxyCommand=kube-iap tunnel --stdio",
            "me@host"
        ]
    );
}

#[test]
fn every_kube_iap_command_in_the_docs_uses_flags_the_binary_has() {
    let blocks = doc_blocks();
    let mut commands = Vec::new();
    for block in blocks.iter().filter(|b| b.language == "sh") {
        for line in block.text.lines() {
            let words = shell_words(line.trim());
            // `kube-iap …` itself, and inside ssh's ProxyCommand.
            if words.first().is_some_and(|w| w == "kube-iap") {
                commands.push((block, words[1..].to_vec()));
            }
            for word in &words {
                if let Some(inner) = word.strip_prefix("ProxyCommand=kube-iap ") {
                    // ssh expands %h and %p before running the command.
                    let inner = inner.replace("%h", "db.example.com").replace("%p", "22");
                    commands.push((block, shell_words(&inner)));
                }
            }
        }
    }
    assert!(commands.len() >= 5, "the docs show kube-iap commands");
    for (block, mut args) in commands {
        // clap checks every flag before it, then prints help instead of running.
        args.push("--help".into());
        let output = Command::new(env!("CARGO_BIN_EXE_kube-iap"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docs/{} block at line {}: kube-iap {}: {}",
            block.file,
            block.line,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
