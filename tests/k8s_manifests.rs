//! Every service of the workspace ships with its Kubernetes manifests, so a
//! new service cannot be added without them: a workspace member with a
//! `src/main.rs` (but the development binary) must have
//! `infra/k8s/base/<service>/` with a Deployment that runs its binary safely
//! and probes it, a Service, a ServiceAccount, a PodDisruptionBudget, a
//! NetworkPolicy and its ConfigMap; an overlay must deploy it; the image must
//! carry its binary; and every setting its ConfigMap sets must be one the
//! code reads.
//!
//! These are file checks and need no cluster and no tools. `make k8s-check`
//! (infra/k8s-check.sh) renders the manifests with kustomize and validates
//! them against the Kubernetes API schemas.

use std::fs;
use std::path::{Path, PathBuf};

/// Binaries that are not deployed as a service of their own, and why.
const NOT_SERVICES: &[(&str, &str)] = &[(
    "callflow",
    "the development binary (`callflow up` runs every service in one process); \
     the image carries it for its `events` commands",
)];

/// Settings a service's ConfigMap sets that its code does not read yet: the
/// manifests are ahead of the code. Each entry must go once the code reads
/// the variable (the test then fails, to keep this list honest).
const AWAITING_CODE: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `members = [...]` of the workspace's Cargo.toml.
fn workspace_members(root: &Path) -> Vec<String> {
    let manifest = read(&root.join("Cargo.toml"));
    let start = manifest
        .find("members = [")
        .expect("Cargo.toml lists the workspace members");
    let list = &manifest[start + "members = [".len()..];
    let list = &list[..list.find(']').expect("the members list ends")];
    list.split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The services: members with a binary (`src/main.rs`), named after their
/// directory, which is also their package and binary name.
fn services(root: &Path) -> Vec<String> {
    let mut services = Vec::new();
    for member in workspace_members(root) {
        if !root.join(&member).join("src/main.rs").is_file() {
            continue;
        }
        let name = Path::new(&member)
            .file_name()
            .expect("a member has a directory name")
            .to_string_lossy()
            .into_owned();
        let package = read(&root.join(&member).join("Cargo.toml"));
        assert!(
            package.contains(&format!("name = \"{name}\"")),
            "{member}: the package (and its binary) is expected to be named `{name}` like its directory"
        );
        if NOT_SERVICES.iter().all(|(not, _)| *not != name) {
            services.push(name);
        }
    }
    assert!(
        services.len() >= 10,
        "found only {services:?}: is the members list parsed right?"
    );
    services
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The `- item` entries of a top-level `key:` list in a kustomization.
fn list_entries(kustomization: &str, key: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut inside = false;
    for line in kustomization.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') && !line.starts_with('#') {
            inside = line.trim_end() == format!("{key}:");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(item) = line.trim().strip_prefix("- ") {
            entries.push(item.trim().to_owned());
        }
    }
    entries
}

/// `KEY` of each `KEY=value` line of an env file.
fn env_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// All Rust sources under `dir`, concatenated.
fn sources(dir: &Path) -> String {
    let mut text = String::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return text;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&read(&path));
        }
    }
    text
}

#[test]
fn every_service_has_base_manifests() {
    let root = root();
    let mut problems = Vec::new();
    for service in services(&root) {
        let dir = root.join("infra/k8s/base").join(&service);
        let kustomization = dir.join("kustomization.yaml");
        if !kustomization.is_file() {
            problems.push(format!(
                "{service}: no infra/k8s/base/{service}/kustomization.yaml (copy another service's directory and adapt it)"
            ));
            continue;
        }
        let kustomization = read(&kustomization);
        for resource in list_entries(&kustomization, "resources") {
            if !dir.join(&resource).exists() {
                problems.push(format!(
                    "{service}: kustomization.yaml lists {resource}, which is missing"
                ));
            }
        }
        let manifests: String = list_entries(&kustomization, "resources")
            .iter()
            .map(|r| dir.join(r))
            .filter(|p| p.is_file())
            .map(|p| read(&p))
            .collect::<Vec<_>>()
            .join("\n---\n");
        for kind in [
            "Deployment",
            "Service",
            "ServiceAccount",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ] {
            if !manifests
                .lines()
                .any(|l| l.trim_end() == format!("kind: {kind}"))
            {
                problems.push(format!("{service}: no {kind} among its resources"));
            }
        }
        if !kustomization.contains("configMapGenerator:")
            || !kustomization.contains(&format!("- name: {service}\n"))
        {
            problems.push(format!(
                "{service}: no ConfigMap `{service}` (configMapGenerator in kustomization.yaml)"
            ));
        }
        for expected in [
            format!("command: [\"/usr/local/bin/{service}\"]"),
            format!("serviceAccountName: {service}"),
            "automountServiceAccountToken: false".to_owned(),
            "runAsNonRoot: true".to_owned(),
            "readOnlyRootFilesystem: true".to_owned(),
            "allowPrivilegeEscalation: false".to_owned(),
            "drop: [\"ALL\"]".to_owned(),
            "type: RuntimeDefault".to_owned(),
            "path: /healthz".to_owned(),
            "path: /readyz".to_owned(),
            "terminationGracePeriodSeconds:".to_owned(),
            "limits:".to_owned(),
            "requests:".to_owned(),
        ] {
            if !manifests.contains(&expected) {
                problems.push(format!("{service}: its Deployment lacks `{expected}`"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_service_is_deployed_by_an_overlay() {
    let root = root();
    let k8s = root.join("infra/k8s");
    let base = list_entries(&read(&k8s.join("base/kustomization.yaml")), "resources");
    let mut overlays = Vec::new();
    for entry in fs::read_dir(k8s.join("overlays"))
        .expect("infra/k8s/overlays")
        .flatten()
    {
        let path = entry.path().join("kustomization.yaml");
        if path.is_file() {
            overlays.push(list_entries(&read(&path), "resources"));
        }
    }
    assert!(overlays.len() >= 2, "overlays/dev and overlays/prod");
    for overlay in &overlays {
        assert!(
            overlay.iter().any(|r| r == "../../base"),
            "every overlay builds on the base: {overlay:?}"
        );
    }
    for service in services(&root) {
        let in_base = base.contains(&service);
        let in_overlay = overlays
            .iter()
            .flatten()
            .any(|r| *r == format!("../../base/{service}"));
        assert!(
            in_base || in_overlay,
            "{service}: neither infra/k8s/base/kustomization.yaml nor an overlay deploys it"
        );
    }
}

#[test]
fn every_manifest_directory_is_a_service() {
    let root = root();
    let services = services(&root);
    for entry in fs::read_dir(root.join("infra/k8s/base")).unwrap().flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name == "common" || services.contains(&name),
            "infra/k8s/base/{name} belongs to no service of the workspace"
        );
    }
}

#[test]
fn every_service_binary_is_in_the_image() {
    let root = root();
    let dockerfile = read(&root.join("Dockerfile"));
    let words: Vec<&str> = dockerfile
        .split(|c: char| c.is_whitespace() || c == ';' || c == '\\')
        .collect();
    let mut binaries = services(&root);
    binaries.extend(NOT_SERVICES.iter().map(|(name, _)| (*name).to_owned()));
    for binary in binaries {
        assert!(
            words.contains(&binary.as_str()),
            "the Dockerfile does not copy the binary {binary} into the image"
        );
    }
    assert!(
        dockerfile.contains("USER 10001"),
        "the image runs as the non-root user 10001"
    );
}

#[test]
fn every_configured_setting_is_read_by_the_code() {
    let root = root();
    let kit = sources(&root.join("services/kit/src"));
    let mut unknown = Vec::new();
    let common = read(&root.join("infra/k8s/base/common/common.env"));
    for key in env_keys(&common) {
        if !kit.contains(&format!("\"{key}\"")) {
            unknown.push(format!("common.env: {key}"));
        }
    }
    let mut still_awaited = Vec::new();
    for service in services(&root) {
        let path = root
            .join("infra/k8s/base")
            .join(&service)
            .join("config.env");
        let Ok(config) = fs::read_to_string(&path) else {
            unknown.push(format!("{service}: no config.env"));
            continue;
        };
        let code = sources(&root.join("services").join(&service).join("src")) + &kit;
        for key in env_keys(&config) {
            let read_by_code = code.contains(&format!("\"{key}\""));
            let awaited = AWAITING_CODE.contains(&(service.as_str(), key.as_str()));
            match (read_by_code, awaited) {
                (false, false) => unknown.push(format!("{service}: {key}")),
                (true, true) => still_awaited.push(format!("{service}: {key}")),
                _ => {}
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "settings in infra/k8s that no code reads (a typo, or a setting removed from the code):\n{}",
        unknown.join("\n")
    );
    assert!(
        still_awaited.is_empty(),
        "the code reads these now: remove them from AWAITING_CODE in tests/k8s_manifests.rs:\n{}",
        still_awaited.join("\n")
    );
}

#[test]
fn no_secret_is_kept_in_the_manifests() {
    let root = root();
    let k8s = root.join("infra/k8s");
    for path in yaml_files(&k8s) {
        let text = read(&path);
        let relative = path.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            !text.lines().any(|l| l.trim_end() == "kind: Secret"),
            "{relative}: Secrets are created out of band, never kept in the repository"
        );
        // Only the development overlay generates Secrets, from the
        // development defaults that are public in the source anyway.
        if !relative.starts_with("infra/k8s/overlays/dev/") {
            assert!(
                !text.contains("secretGenerator:"),
                "{relative}: only overlays/dev may generate (development) Secrets"
            );
        }
    }
}

#[test]
fn the_routing_scenarios_are_the_example_deployments() {
    let root = root();
    assert_eq!(
        read(&root.join("infra/k8s/base/call-router/scenarios.toml")),
        read(&root.join("infra/call-router/scenarios.toml")),
        "infra/k8s/base/call-router/scenarios.toml is a copy of infra/call-router/scenarios.toml: copy it again"
    );
}

#[test]
fn the_dev_console_users_are_the_development_users() {
    let root = root();
    assert_eq!(
        read(&root.join("infra/k8s/overlays/dev/console-users.toml")),
        read(&root.join("infra/console/users.toml")),
        "infra/k8s/overlays/dev/console-users.toml is a copy of infra/console/users.toml: copy it again"
    );
}
