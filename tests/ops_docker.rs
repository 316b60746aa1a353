//! The Docker files, checked by reading (Docker cannot run here): every `COPY` source exists,
//! the dependency-layer stubs cover every target the manifests declare, the `HEALTHCHECK` runs a
//! real subcommand, and every `JETSTREAM_INGESTOR__SECTION__KEY` they name is a real setting
//! whose values load together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use clap::Parser as _;
use jetstream_ingestor::settings::Settings;

const TOKEN: &str = "test-token-0123456789abcdef";

#[test]
fn docker_files_reference_paths_and_settings_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let compose = std::fs::read_to_string(root.join("docker/compose.yaml")).unwrap();

    // Every COPY from the build context (the repository root) names something that exists.
    let mut copies = 0;
    for line in dockerfile.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            assert!(
                root.join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copies += 1;
        }
    }
    assert!(copies >= 4, "{copies} COPY sources checked");

    // The dependency layer stubs every target the manifests declare, or cargo refuses them.
    for manifest in ["Cargo.toml", "actors/Cargo.toml"] {
        let text = std::fs::read_to_string(root.join(manifest)).unwrap();
        let dir = Path::new(manifest).parent().unwrap();
        let mut section = "";
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            }
            // `[[bench]] name = "x"` without a path means benches/x.rs (tests/, examples/ alike).
            let default_dir = match section {
                "[[bench]]" => Some("benches"),
                "[[test]]" => Some("tests"),
                "[[example]]" => Some("examples"),
                _ => None,
            };
            if let (Some(name), Some(target_dir)) = (line.strip_prefix("name = \""), default_dir) {
                let file = format!("{target_dir}/{}.rs", name.trim_end_matches('"'));
                let full = dir.join(file);
                let full = full.to_string_lossy().into_owned();
                assert!(
                    dockerfile.contains(&full),
                    "the Dockerfile's stub step must create {full}"
                );
            }
            if let Some(path) = line.strip_prefix("path = \"") {
                let path = path.trim_end_matches('"');
                if path.ends_with(".rs") {
                    let full = dir.join(path).to_string_lossy().into_owned();
                    assert!(
                        dockerfile.contains(&full),
                        "the Dockerfile's stub step must create {full} (declared in {manifest})"
                    );
                }
            }
        }
    }

    // The health check uses a real subcommand.
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("\"admin\", \"healthcheck\""));
    jetstream_ingestor::cli::Cli::try_parse_from(["jetstream-ingestor", "admin", "healthcheck"])
        .expect("admin healthcheck parses");

    // Every JETSTREAM_INGESTOR__… name in both files (comments and examples included) is a
    // setting; the values the files really pass (Dockerfile ENV, compose environment) load
    // together.
    let mut named: Vec<String> = Vec::new();
    let mut vars: Vec<(String, String)> = Vec::new();
    for text in [&dockerfile, &compose] {
        for line in text.lines() {
            let mut rest = line;
            while let Some(at) = rest.find("JETSTREAM_INGESTOR__") {
                let tail = &rest[at..];
                let len = tail
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(tail.len());
                // `SECTION__KEY` after the prefix; a bare prefix in prose is not a name.
                if tail[..len]["JETSTREAM_INGESTOR__".len()..].contains("__") {
                    named.push(tail[..len].to_owned());
                }
                rest = &tail[len..];
            }
            let trimmed = line.trim();
            let assignment = trimmed.strip_prefix("ENV ").unwrap_or(trimmed);
            if !assignment.starts_with("JETSTREAM_INGESTOR__") {
                continue;
            }
            let Some((name, value)) = assignment.split_once([':', '=']) else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            // Compose interpolation (`${VAR:?message}`) stands for the operator's secret.
            let value = if value.starts_with("${") {
                TOKEN.to_owned()
            } else {
                value.to_owned()
            };
            vars.push((name.trim().to_owned(), value));
        }
    }
    assert!(
        vars.iter()
            .any(|(n, _)| n == "JETSTREAM_INGESTOR__ADMIN__TOKEN"),
        "compose passes the admin token"
    );
    assert!(
        named.len() > vars.len(),
        "commented examples are checked too"
    );
    for name in &named {
        if let Err(e) = Settings::load(None, vec![(name.clone(), String::new())]) {
            let e = e.to_string();
            assert!(!e.contains("unknown field"), "{name} is not a setting: {e}");
        }
    }
    let all = Settings::load(None, vars.clone()).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
    assert_eq!(all.admin.listen.to_string(), "0.0.0.0:8089");
    assert!(all.admin.token.is_some());
}
