//! The Docker files, checked by reading (Docker cannot run here): every `COPY` source exists,
//! the build stage copies every file the build reads (the manifests, every source file of the
//! targets it compiles and every file those name in `include_str!`/`include_bytes!`/`include!`,
//! each to the same path under the build directory), the dependency-layer stubs cover every
//! target the manifests declare, the `HEALTHCHECK` runs a real subcommand, and every
//! `JETSTREAM_INGESTOR__SECTION__KEY` they name is a real setting whose values load together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

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

/// Every file `cargo build --release --bin jetstream-ingestor` reads, relative to the
/// repository root: `Cargo.lock`, each workspace package's manifest, every `.rs` file under
/// the directory of each target that build compiles (library, binaries, build scripts; not
/// tests, benches or examples), and every file those sources include. The targets come from
/// `cargo metadata`, so a new package, binary or build script is covered without editing
/// this test.
fn build_inputs(root: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rel = |p: &Path| -> PathBuf {
        let p = p
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p.strip_prefix(root.canonicalize().unwrap())
            .unwrap_or_else(|_| panic!("{} is outside the repository", p.display()))
            .to_path_buf()
    };
    let mut inputs = vec![PathBuf::from("Cargo.lock")];
    let mut source_dirs = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        inputs.push(rel(Path::new(package["manifest_path"].as_str().unwrap())));
        for target in package["targets"].as_array().unwrap() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            if kinds
                .iter()
                .any(|k| matches!(*k, "lib" | "bin" | "custom-build" | "proc-macro"))
            {
                let src = Path::new(target["src_path"].as_str().unwrap());
                let dir = src.parent().unwrap().to_path_buf();
                if !source_dirs.contains(&dir) {
                    source_dirs.push(dir);
                }
            }
        }
    }
    assert!(!source_dirs.is_empty(), "no compiled target found");
    let mut sources = Vec::new();
    for dir in &source_dirs {
        rust_files(dir, &mut sources);
    }
    for file in &sources {
        inputs.push(rel(file));
        let text = std::fs::read_to_string(file).unwrap();
        for included in included_paths(&text, file) {
            let target = file.parent().unwrap().join(&included);
            assert!(
                target.is_file(),
                "{} includes {included}, which does not exist",
                file.display()
            );
            inputs.push(rel(&target));
        }
    }
    inputs.sort();
    inputs.dedup();
    inputs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The literal paths of the `include_str!`, `include_bytes!` and `include!` calls in `text`
/// (comment lines ignored). A call whose argument is not a plain string literal fails the
/// test: this check could not follow it, and neither would a reviewer.
fn included_paths(text: &str, file: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = ["include_str!(", "include_bytes!(", "include!("]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min()
        {
            let arg = rest[at.0 + at.1..].trim_start();
            let literal = arg
                .strip_prefix('"')
                .and_then(|a| a.split_once('"'))
                .filter(|(path, after)| {
                    !path.contains('\\') && after.trim_start().starts_with(')')
                });
            let Some((path, after)) = literal else {
                panic!(
                    "{}: `{}`: only a plain string literal path can be checked against the \
                     Dockerfile",
                    file.display(),
                    line.trim()
                );
            };
            paths.push(path.to_owned());
            rest = after;
        }
    }
    paths
}

/// The inputs that the build stage of `dockerfile` does not put at the same path under its
/// `WORKDIR` before its last `cargo build`; files listed in `dockerignore` count as absent.
fn not_copied(
    root: &Path,
    dockerfile: &str,
    dockerignore: &str,
    inputs: &[PathBuf],
) -> Vec<String> {
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let last_build = lines
        .iter()
        .rposition(|l| l.contains("cargo build"))
        .expect("the Dockerfile runs cargo build");
    let stage_start = lines[..last_build]
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM before the build");
    let mut workdir = PathBuf::from("/");
    // (source in the context, where it lands relative to the workdir, is a directory)
    let mut copies: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    for line in &lines[stage_start..last_build] {
        if let Some(dir) = line.strip_prefix("WORKDIR ") {
            workdir = workdir.join(dir.trim());
            continue;
        }
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
        let (dest, sources) = words.split_last().expect("COPY has a destination");
        let dest_abs = normalise(&workdir.join(dest));
        let Ok(dest_rel) = dest_abs.strip_prefix(normalise(&workdir)) else {
            continue; // outside the build directory: not where cargo looks
        };
        for src in sources {
            let src = normalise(Path::new(src));
            let is_dir = root.join(&src).is_dir();
            // A file copied into a directory (`COPY a b ./`, `COPY a dir/`) keeps its name.
            let landing = if !is_dir && (dest.ends_with('/') || words.len() > 2) {
                dest_rel.join(src.file_name().unwrap())
            } else {
                dest_rel.to_path_buf()
            };
            copies.push((src, landing, is_dir));
        }
    }
    let ignored: Vec<PathBuf> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(
                !l.contains(['*', '?', '[', '!']),
                ".dockerignore pattern {l:?}: teach tests/ops_docker.rs its globs"
            );
            normalise(Path::new(l))
        })
        .collect();
    inputs
        .iter()
        .filter(|input| {
            let sent = !ignored.iter().any(|i| input.starts_with(i));
            let copied = copies.iter().any(|(src, landing, is_dir)| {
                if *is_dir {
                    input
                        .strip_prefix(src)
                        .is_ok_and(|tail| landing.join(tail) == **input)
                } else {
                    src == *input && landing == *input
                }
            });
            !(sent && copied)
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// `p` without `.` components and trailing slashes (`./actors/src/` → `actors/src`).
fn normalise(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[test]
fn the_build_stage_copies_every_file_the_build_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_default();
    let inputs = build_inputs(root);
    // The scan sees what the build really reads: the sources, the demo's bucket file, the
    // embedded zstd dictionary; not the tests' fixtures.
    for must in [
        "Cargo.lock",
        "actors/Cargo.toml",
        "src/main.rs",
        "src/demo.rs",
        "actors/src/jetstream/config.rs",
        "config/buckets.example.toml",
        "actors/assets/zstd_dictionary",
    ] {
        assert!(
            inputs.contains(&PathBuf::from(must)),
            "{must} not among the build inputs {inputs:?}"
        );
    }
    assert!(
        !inputs.iter().any(|i| i.starts_with("tests")),
        "test files are not build inputs: {inputs:?}"
    );
    let missing = not_copied(root, &dockerfile, &dockerignore, &inputs);
    assert!(
        missing.is_empty(),
        "the Dockerfile's build stage does not copy {missing:?} to the same path under its \
         WORKDIR before `cargo build`"
    );
}

#[test]
fn the_copy_check_names_what_a_dockerfile_leaves_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let inputs = build_inputs(root);
    assert!(not_copied(root, &dockerfile, "", &inputs).is_empty());

    // Without the COPY of config/ (a bug the Dockerfile once had): the demo's include is named.
    let without: String = dockerfile
        .lines()
        .filter(|l| !l.trim().starts_with("COPY config ./config"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, dockerfile, "the Dockerfile copies config/");
    assert_eq!(
        not_copied(root, &without, "", &inputs),
        vec!["config/buckets.example.toml".to_owned()]
    );
    // Copied, but to another path: the relative include would not find it.
    let elsewhere = dockerfile.replace("COPY config ./config", "COPY config ./conf");
    assert_eq!(
        not_copied(root, &elsewhere, "", &inputs),
        vec!["config/buckets.example.toml".to_owned()]
    );
    // Copied after the build: too late.
    let late = format!("{without}COPY config ./config\n");
    assert_eq!(
        not_copied(root, &late, "", &inputs),
        vec!["config/buckets.example.toml".to_owned()]
    );
    // Excluded from the context by .dockerignore.
    assert_eq!(
        not_copied(root, &dockerfile, "actors/assets\n", &inputs),
        vec!["actors/assets/zstd_dictionary".to_owned()]
    );
    // A new source file is covered by its directory's COPY; a lost one is named.
    let no_actors = dockerfile.replace("COPY actors/src ./actors/src", "");
    let missing = not_copied(root, &no_actors, "", &inputs);
    assert!(
        missing.contains(&"actors/src/lib.rs".to_owned())
            && missing.iter().all(|m| m.starts_with("actors/src/")),
        "{missing:?}"
    );

    // The include scanner follows literal paths, skips comments, refuses what it cannot read.
    let here = Path::new("src/x.rs");
    assert_eq!(
        included_paths(
            "const A: &str = include_str!(\"../a.toml\");\n// include_bytes!(\"no\")\nconst B: &[u8] = include_bytes!( \"b/c\" ); include!(\"d.rs\");",
            here
        ),
        ["../a.toml", "b/c", "d.rs"]
    );
    let computed = std::panic::catch_unwind(|| {
        included_paths("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/x\"));", here)
    });
    assert!(computed.is_err(), "a computed path is refused, not ignored");
}
