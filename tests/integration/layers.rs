//! The data plane never sees Kubernetes types: `proxy` and `model` (and `auth`, once it exists)
//! import neither `kube` nor `k8s_openapi` nor the CRD structs.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_data_plane_imports_no_kubernetes_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for layer in ["proxy", "model", "auth"] {
        rust_files(&src.join(layer), &mut files);
    }
    assert!(files.len() >= 5, "the layers exist: {files:?}");
    let forbidden = [
        "kube::",
        "k8s_openapi",
        "use kube",
        "crate::api",
        "crate::index",
        "crate::source",
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue; // prose may name other layers; only code is checked
            }
            for needle in forbidden {
                assert!(
                    !line.contains(needle),
                    "{}:{} reaches outside the data plane ({needle}): {line}",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}
