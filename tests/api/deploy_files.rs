//! The Dockerfile and the systemd unit stay true to the project: what they copy exists, the
//! image runs as a non-root user with the binary and its static files, the build stage installs
//! what `.ci/setup` installs for the build, and the unit runs the real command line.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Instructions of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_what_the_project_has_and_runs_unprivileged() {
    let text = read("Dockerfile");
    let steps = instructions(&text);
    let known = [
        "FROM",
        "RUN",
        "WORKDIR",
        "COPY",
        "USER",
        "ENV",
        "EXPOSE",
        "ENTRYPOINT",
        "CMD",
        "ARG",
    ];
    for (op, _) in &steps {
        assert!(known.contains(&op.as_str()), "unknown instruction {op}");
    }
    let froms: Vec<&String> = steps
        .iter()
        .filter(|(o, _)| o == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a run stage");
    assert!(froms[0].ends_with("AS build"));
    for (op, args) in &steps {
        if op == "COPY" && !args.starts_with("--from") {
            let parts: Vec<&str> = args.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                assert!(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                    "COPY {source}: no such path"
                );
            }
        }
    }
    // Everything the build reads is copied before it: the query macros compile from the
    // offline data (`.sqlx/`, switched on in `.cargo/config.toml`); no database is reachable.
    let build_at = steps
        .iter()
        .position(|(o, a)| o == "RUN" && a.starts_with("cargo build"))
        .expect("a cargo build");
    let copied: Vec<&str> = steps[..build_at]
        .iter()
        .filter(|(o, a)| o == "COPY" && !a.starts_with("--from"))
        .flat_map(|(_, a)| {
            let parts: Vec<&str> = a.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "migrations",
        "templates",
        "static",
        ".cargo",
        ".sqlx",
    ] {
        assert!(
            copied.contains(&needed),
            "the build stage does not copy {needed}"
        );
    }
    let user = steps
        .iter()
        .rev()
        .find(|(o, _)| o == "USER")
        .expect("a USER");
    assert!(
        !user.1.starts_with("root") && !user.1.starts_with('0'),
        "non-root"
    );
    assert!(text.contains("COPY --from=build /src/target/release/cloudpki"));
    assert!(text.contains("COPY --from=build /src/static /src/static"));
    // The build stage installs what `.ci/setup` installs for building librdkafka.
    let setup = read(".ci/setup");
    for package in ["libssl-dev", "pkg-config", "make", "zlib1g-dev"] {
        assert!(setup.contains(package), ".ci/setup lacks {package}");
        assert!(text.contains(package), "the Dockerfile lacks {package}");
    }
    let entry = steps
        .iter()
        .find(|(o, _)| o == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(entry.1, r#"["/usr/local/bin/cloudpki"]"#);
    let cmd = steps.iter().find(|(o, _)| o == "CMD").expect("CMD");
    assert_eq!(cmd.1, r#"["serve"]"#);
}

#[test]
fn the_systemd_unit_runs_serve_unprivileged_and_stops_gracefully() {
    let unit = read("deploy/cloudpki.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_owned()
    };
    assert_eq!(value("ExecStart"), "/usr/local/bin/cloudpki serve");
    assert_eq!(value("User"), "cloudpki");
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("NoNewPrivileges"), "yes");
    // Every CLOUDPKI_ variable it sets is one the program reads.
    let config = read("src/config.rs") + &read("src/main.rs") + &read("src/telemetry.rs");
    for line in unit.lines().filter(|l| l.starts_with("Environment=")) {
        let name = line["Environment=".len()..].split('=').next().unwrap();
        assert!(
            config.contains(&format!("\"{name}\"")),
            "{name} is not a configuration variable"
        );
    }
}
