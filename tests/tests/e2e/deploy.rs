//! The deployment files agree with the code: `.env.example` and the README list every variable the
//! config reads, and `docker-compose.yml` parses and wires the services the README describes.

use std::collections::BTreeSet;

use ledger_tests::db::workspace_root;
use serde_norway::Value;

fn file(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn is_variable(word: &str) -> bool {
    word.len() > 2 && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The variables named in the first column of the README's tables.
fn readme_variables() -> BTreeSet<String> {
    file("README.md")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
        .filter(|w| is_variable(w))
        .collect()
}

/// The variables `.env.example` assigns (set or left empty).
fn example_variables() -> BTreeSet<String> {
    file(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim().to_owned()))
        .filter(|w| is_variable(w))
        .collect()
}

#[test]
fn every_config_variable_is_in_the_readme_and_in_env_example() {
    let config = shared::config::Config::variables();
    assert!(config.contains("DATABASE_URL") && config.contains("BILLING_API_KEY") && config.len() > 30, "{config:?}");
    let readme = readme_variables();
    let example = example_variables();
    let missing_in_readme: Vec<_> = config.difference(&readme).collect();
    assert!(
        missing_in_readme.is_empty(),
        "read by the config, missing from the README's tables: {missing_in_readme:?}"
    );
    let missing_in_example: Vec<_> = readme.difference(&example).collect();
    assert!(missing_in_example.is_empty(), "in the README, missing from .env.example: {missing_in_example:?}");
    let unknown: Vec<_> = example.difference(&readme).collect();
    assert!(unknown.is_empty(), "in .env.example, documented nowhere in the README: {unknown:?}");
}

#[test]
fn the_compose_file_wires_the_services_in_order_with_health_checks() {
    let compose: Value = serde_norway::from_str(&file("docker-compose.yml")).expect("docker-compose.yml parses");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    let expected = ["postgres", "migrate", "roles", "ingest", "projector", "mailpit", "stripe-cli"];
    assert_eq!(names, expected.into_iter().collect(), "the services the README names");
    let service = |name: &str| &compose["services"][name];
    let after =
        |name: &str, dependency: &str| service(name)["depends_on"][dependency]["condition"].as_str().map(str::to_owned);
    assert_eq!(after("migrate", "postgres").as_deref(), Some("service_healthy"));
    assert_eq!(after("roles", "migrate").as_deref(), Some("service_completed_successfully"));
    assert_eq!(after("ingest", "roles").as_deref(), Some("service_completed_successfully"));
    assert_eq!(after("projector", "roles").as_deref(), Some("service_completed_successfully"));
    assert_eq!(after("stripe-cli", "ingest").as_deref(), Some("service_healthy"));
    assert_eq!(service("migrate")["command"][1].as_str(), Some("migrate"));
    assert_eq!(service("stripe-cli")["profiles"][0].as_str(), Some("stripe"));
    let forward = service("stripe-cli")["command"].as_sequence().expect("command");
    assert!(forward.iter().any(|a| a.as_str() == Some("ingest:3005/webhooks/stripe")));
    // Least privilege as deployed: the services log in as users holding only their role.
    let url = |name: &str| service(name)["environment"]["DATABASE_URL"].as_str().unwrap_or_default().to_owned();
    assert!(url("ingest").starts_with("postgres://ingest_svc:"), "{}", url("ingest"));
    assert!(url("projector").starts_with("postgres://projector_svc:"), "{}", url("projector"));
    let roles = service("roles")["command"][2].as_str().unwrap_or_default();
    assert!(roles.contains("IN ROLE ledger_ingest") && roles.contains("IN ROLE ledger_projector"), "{roles}");
    for name in ["ingest", "projector"] {
        assert_eq!(service(name)["environment"]["MIGRATE_ON_START"].as_str(), Some("false"), "{name}");
    }
    for name in ["postgres", "mailpit"] {
        assert!(service(name)["healthcheck"]["test"].is_sequence(), "{name} has a health check");
    }
}

#[test]
fn the_image_holds_the_binaries_and_migrations_and_checks_health_as_a_non_root_user() {
    let dockerfile = file("Dockerfile");
    for needed in [
        "cargo build --release --locked --bins",
        "SQLX_OFFLINE=true",
        "COPY migrations/ /app/migrations/",
        "USER ledger",
        "HEALTHCHECK",
        "/healthz",
        "CMD [\"ingest\"]",
    ] {
        assert!(dockerfile.contains(needed), "the Dockerfile lacks `{needed}`");
    }
    assert!(file("scripts/run-local").contains("cargo build --release --bins"), "the README's own build");
    let ignored = file(".dockerignore");
    assert!(ignored.contains("target/") && ignored.contains(".data/") && ignored.contains(".env"));
}

/// The crates of `package`'s normal dependency tree, however deep (`cargo tree`, offline).
fn normal_dependencies(package: &str) -> std::collections::BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(ledger_tests::db::workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: std::collections::BTreeSet<String> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    assert!(crates.contains("serde_json") && crates.contains(package), "the tree was read: {crates:?}");
    crates
}

/// The domain crate stays pure: nothing that does I/O (a database driver, an async runtime, an
/// HTTP or mail stack) is in its normal dependency tree, however deep.
#[test]
fn the_domain_crate_depends_on_no_io_crate() {
    let crates = normal_dependencies("domain");
    let forbidden = ["sqlx", "tokio", "axum", "hyper", "reqwest", "lettre", "tokio-postgres", "mio", "socket2"];
    let found: Vec<&&str> = forbidden.iter().filter(|c| crates.contains(**c)).collect();
    assert!(found.is_empty(), "the domain crate pulls in I/O crates {found:?}: {crates:?}");
}

/// Each crate pulls in only the stacks of its job (docs/architecture.md): the tooling and the
/// store serve no HTTP, render no HTML and send no mail; the API sends no mail and reaches
/// neither the projector's runner nor its dispatcher.
#[test]
fn each_crate_pulls_in_only_the_stacks_of_its_job() {
    let rules: [(&str, &[&str]); 3] = [
        ("store", &["axum", "maud", "lettre", "api", "projector"]),
        ("replay", &["axum", "maud", "lettre", "api", "projector"]),
        ("api", &["lettre", "projector"]),
    ];
    for (package, forbidden) in rules {
        let crates = normal_dependencies(package);
        let found: Vec<&&str> = forbidden.iter().filter(|c| crates.contains(**c)).collect();
        assert!(found.is_empty(), "{package} pulls in {found:?}");
    }
}

/// The modules of crate `dir` (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`) and the modules of
/// the same crate each one names (`crate::x::...`, `super::x`), outside comments and tests.
fn module_imports(dir: &str) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = workspace_root().join(dir).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let mut sources = std::collections::BTreeMap::new();
    for path in paths {
        let relative = path.strip_prefix(&src).expect("under src").with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&path).expect("source");
        let code: Vec<&str> = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        sources.insert(parts.join("::"), code.join("\n"));
    }
    let known: BTreeSet<String> = sources.keys().cloned().collect();
    let word = |s: &str| {
        s.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect::<String>()
    };
    let mut imports = std::collections::BTreeMap::new();
    for (module, code) in &sources {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let path: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            if let Some(target) = (1..=parts.len()).rev().map(|k| parts[..k].join("::")).find(|t| known.contains(t)) {
                targets.insert(target);
            }
        }
        for (i, _) in code.match_indices("super::") {
            let name = word(&code[i + 7..]);
            let target = if parent.is_empty() { name } else { format!("{parent}::{name}") };
            if known.contains(&target) {
                targets.insert(target);
            }
        }
        // A module naming its own parent or child is no circle between files of one concern.
        targets.retain(|t| {
            t != module && !module.starts_with(&format!("{t}::")) && !t.starts_with(&format!("{module}::"))
        });
        imports.insert(module.clone(), targets);
    }
    imports
}

/// No two files of a crate import each other, directly or through others (issue 28): each
/// concern builds on the ones below it.
#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    for dir in ["domain", "shared", "store", "api", "projector", "replay", "ingest"] {
        let imports = module_imports(dir);
        assert!(imports.len() > 3, "{dir}: modules were read: {imports:?}");
        for start in imports.keys() {
            let mut stack = vec![vec![start.clone()]];
            while let Some(path) = stack.pop() {
                let last = path.last().expect("a path");
                for next in imports.get(last).into_iter().flatten() {
                    assert!(next != start, "{dir}: import circle {} -> {start}", path.join(" -> "));
                    if !path.contains(next) {
                        stack.push([path.clone(), vec![next.clone()]].concat());
                    }
                }
            }
        }
    }
}

/// `(variable, default)` pairs a document states, where the default is a literal a variable can
/// be set to (a number, a boolean, an address): the README's tables (`| `A` / `B` | `1` / `2` |`)
/// and `.env.example`'s comments (`(default 1)`, `(defaults 1 / 2)` for the variables below).
fn stated_defaults() -> Vec<(String, String, &'static str)> {
    let literal = |v: &str| {
        !v.is_empty()
            && (v == "true" || v == "false" || v.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b':'))
    };
    let mut out = Vec::new();
    for line in file("README.md").lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').collect();
        let ticked = |cell: &str| cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>();
        let names: Vec<String> = ticked(cells[1]).into_iter().filter(|w| is_variable(w)).collect();
        let values = ticked(cells.get(2).copied().unwrap_or_default());
        if names.len() == values.len() {
            out.extend(names.into_iter().zip(values).filter(|(_, v)| literal(v)).map(|(n, v)| (n, v, "README.md")));
        }
    }
    let example = file(".env.example");
    let lines: Vec<&str> = example.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let mut comment = String::new();
        while i < lines.len() && lines[i].starts_with('#') {
            comment += lines[i];
            comment += " ";
            i += 1;
        }
        let mut names = Vec::new();
        while i < lines.len() && !lines[i].starts_with('#') && !lines[i].trim().is_empty() {
            names.extend(lines[i].split_once('=').map(|(n, _)| n.trim().to_owned()));
            i += 1;
        }
        i += usize::from(names.is_empty());
        let mut values = Vec::new();
        for (at, _) in comment.match_indices("(default") {
            let rest = comment[at..].trim_start_matches("(defaults").trim_start_matches("(default").trim_start();
            let stated = rest.split([')', ';']).next().unwrap_or_default();
            values.extend(stated.split([' ', '/']).filter(|w| !w.is_empty() && *w != "and").map(str::to_owned));
            if stated.split_whitespace().next().is_some_and(|w| !literal(w.trim_end_matches(','))) {
                values.push(String::new()); // not a literal: this block is not checked
            }
        }
        if names.len() == values.len() {
            out.extend(names.into_iter().zip(values).filter(|(_, v)| literal(v)).map(|(n, v)| (n, v, ".env.example")));
        }
    }
    out
}

/// Every default the README and `.env.example` state is the one the config applies: setting a
/// variable to its stated default changes nothing in any binary's config.
#[test]
fn every_stated_default_is_the_configs_default() {
    let base = [("DATABASE_URL", "postgres://u@h/d"), ("STRIPE_WEBHOOK_SECRET", "whsec_x")];
    let configs = |extra: Option<(&str, &str)>| {
        let vars: Vec<(&str, &str)> = base.iter().copied().chain(extra).collect();
        let common = shared::config::Config::from_vars(vars.clone()).map_err(|e| e.to_string())?;
        let ingest = shared::config::IngestConfig::from_vars(vars.clone(), &common).map_err(|e| e.to_string())?;
        let projector = shared::config::ProjectorConfig::from_vars(vars, &common).map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("{common:?} {ingest:?} {projector:?}"))
    };
    let defaults = configs(None).expect("the defaults are valid");
    let stated = stated_defaults();
    for name in ["INGEST_APPENDERS", "INGEST_MAX_BATCH", "PROJECTOR_BATCH_SIZE", "DATABASE_MAX_CONNECTIONS"] {
        for source in ["README.md", ".env.example"] {
            assert!(stated.iter().any(|(n, _, s)| n == name && *s == source), "{name} in {source}: {stated:?}");
        }
    }
    let wrong: Vec<String> = stated
        .iter()
        .filter(|(name, value, _)| configs(Some((name, value))).as_deref() != Ok(defaults.as_str()))
        .map(|(name, value, source)| format!("{source}: {name} = {value}"))
        .collect();
    assert!(wrong.is_empty(), "stated defaults the config does not apply: {wrong:?}");
}
