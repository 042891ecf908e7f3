//! deploy/: the Kubernetes manifests parse as Kubernetes objects with the fields each kind needs
//! (and the commands in them parse with hindsight's real CLI; the ConfigMap's pipeline parses as
//! a PipelineConfig); the Dockerfiles build with the same commands the docs give.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use hindsight::cli::Cli;
use hindsight::config::PipelineConfig;
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of every file in deploy/k8s, as (file, JSON value).
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the k8s manifests, found {files:?}"
    );
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read yaml");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                out.push((name.clone(), v));
            }
        }
    }
    out
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("missing string field {path} in {v}"))
}

fn pod_spec<'a>(kind: &str, v: &'a Value) -> &'a Value {
    match kind {
        "CronJob" => &v["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "Job" => &v["spec"]["template"]["spec"],
        other => panic!("no pod spec in a {other}"),
    }
}

/// The hindsight argument vectors a container runs (args of the image's `hindsight` entrypoint,
/// or `hindsight …` commands inside a shell script).
fn hindsight_commands(container: &Value) -> Vec<Vec<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().expect("string arg").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    if command.is_empty() {
        return vec![args];
    }
    assert_eq!(command, ["/bin/sh", "-c"], "unexpected command");
    args.join(" ")
        .split("&&")
        .map(|c| {
            let words: Vec<String> = c.split_whitespace().map(str::to_string).collect();
            assert_eq!(words.first().map(String::as_str), Some("hindsight"), "{c}");
            words[1..].to_vec()
        })
        .collect()
}

#[test]
fn kubernetes_manifests_are_valid_objects_wired_together() {
    let docs = manifests();
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut output_dir = String::new();
    for (file, v) in &docs {
        let api = s(v, "apiVersion");
        let kind = s(v, "kind");
        let name = s(v, "metadata.name");
        assert!(
            !name.is_empty() && name.len() <= 63,
            "{file}: bad name {name}"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{file}: {name} is not a DNS label"
        );
        let expected_api = match kind {
            "ConfigMap" | "Secret" | "ServiceAccount" => "v1",
            "Job" | "CronJob" => "batch/v1",
            other => panic!("{file}: unexpected kind {other}"),
        };
        assert_eq!(api, expected_api, "{file}");
        match kind {
            "ConfigMap" => {
                config_maps.insert(name.to_string());
                let toml = v["data"]["pipeline.toml"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: no data.pipeline.toml"));
                let cfg = PipelineConfig::parse(toml, file.as_ref(), &[])
                    .unwrap_or_else(|e| panic!("{file}: pipeline does not parse: {e}"));
                assert!(cfg.input.paths.iter().all(|p| p.starts_with("s3://")));
                output_dir = cfg.output.dir.display().to_string();
                assert!(output_dir.starts_with("s3://"), "{output_dir}");
            }
            "Secret" => {
                secrets.insert(name.to_string());
                assert!(v["stringData"]["AWS_REGION"].is_string(), "{file}");
            }
            _ => {}
        }
    }
    assert!(!output_dir.is_empty(), "no ConfigMap with a pipeline");

    let mut kinds = BTreeSet::new();
    let mut indexed_tasks = None;
    let mut finalize_tasks = None;
    for (file, v) in &docs {
        let kind = s(v, "kind");
        if kind != "Job" && kind != "CronJob" {
            continue;
        }
        let spec = pod_spec(kind, v);
        let restart = s(spec, "restartPolicy");
        assert!(
            restart == "Never" || restart == "OnFailure",
            "{file}: {restart}"
        );
        let volumes: BTreeSet<&str> = spec["volumes"]
            .as_array()
            .map(|a| a.iter().map(|x| s(x, "name")).collect())
            .unwrap_or_default();
        for vol in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(cm) = vol["configMap"]["name"].as_str() {
                assert!(config_maps.contains(cm), "{file}: unknown ConfigMap {cm}");
            }
        }
        let containers = spec["containers"].as_array().expect("containers");
        assert!(!containers.is_empty(), "{file}");
        for c in containers {
            assert!(
                !s(c, "name").is_empty() && !s(c, "image").is_empty(),
                "{file}"
            );
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                assert!(
                    volumes.contains(s(m, "name")),
                    "{file}: mount of unknown volume"
                );
                assert!(s(m, "mountPath").starts_with('/'), "{file}");
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                let secret = s(e, "secretRef.name");
                assert!(secrets.contains(secret), "{file}: unknown Secret {secret}");
            }
            for args in hindsight_commands(c) {
                // The commands must parse with the real CLI (indexed pods get their index).
                let argv: Vec<String> = std::iter::once("hindsight".to_string())
                    .chain(
                        args.iter()
                            .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", "0")),
                    )
                    .collect();
                Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{file}: `{}` does not parse: {e}", argv.join(" ")));
                let after = |flag: &str| {
                    args.iter()
                        .position(|a| a == flag)
                        .and_then(|i| args.get(i + 1))
                        .cloned()
                };
                match args.first().map(String::as_str) {
                    Some("run") => {
                        assert_eq!(args[1], "/etc/hindsight/pipeline.toml", "{file}");
                        if kind == "Job" {
                            assert_eq!(
                                after("--task-index").as_deref(),
                                Some("$(JOB_COMPLETION_INDEX)")
                            );
                            indexed_tasks = after("--num-tasks");
                            // The last task finalizes, under a run id every pod of the Job
                            // shares: the Job's uid, from the pod's label.
                            assert!(args.iter().any(|a| a == "--finalize-if-last"), "{file}");
                            let run_id = c["env"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|e| s(e, "name") == "HINDSIGHT_RUN_ID")
                                .unwrap_or_else(|| panic!("{file}: no HINDSIGHT_RUN_ID"));
                            assert_eq!(
                                s(run_id, "valueFrom.fieldRef.fieldPath"),
                                "metadata.labels['batch.kubernetes.io/controller-uid']",
                                "{file}"
                            );
                        }
                    }
                    Some("finalize") => {
                        assert_eq!(args[1], output_dir, "{file}: finalize another dataset");
                        finalize_tasks = after("--num-tasks");
                    }
                    Some("validate") => assert_eq!(args[1], output_dir, "{file}"),
                    other => panic!("{file}: unexpected hindsight command {other:?}"),
                }
            }
        }
        match (kind, v["spec"]["completionMode"].as_str()) {
            ("CronJob", _) => {
                kinds.insert("cronjob");
                let fields = s(v, "spec.schedule").split_whitespace().count();
                assert_eq!(fields, 5, "{file}: schedule is not a cron expression");
                assert_eq!(s(v, "spec.concurrencyPolicy"), "Forbid", "{file}");
            }
            ("Job", Some(mode)) => {
                kinds.insert("indexed");
                assert_eq!(mode, "Indexed", "{file}");
                let completions = v["spec"]["completions"].as_u64().expect("completions");
                assert!(v["spec"]["parallelism"].as_u64().is_some(), "{file}");
                assert_eq!(
                    indexed_tasks.as_deref(),
                    Some(completions.to_string().as_str()),
                    "{file}: --num-tasks must equal completions"
                );
                let c = &containers[0];
                assert_eq!(
                    c["resources"]["limits"]["nvidia.com/gpu"].as_u64(),
                    Some(1),
                    "{file}"
                );
                assert!(spec["nodeSelector"].is_object(), "{file}: nodeSelector");
                assert!(spec["tolerations"].is_array(), "{file}: tolerations");
                let args = hindsight_commands(c).concat();
                assert!(args
                    .windows(2)
                    .any(|w| w[0] == "--device" && w[1].starts_with("cuda")));
            }
            ("Job", None) => {
                kinds.insert("finalize");
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(
        kinds,
        ["cronjob", "finalize", "indexed"].into_iter().collect(),
        "missing a workload"
    );
    assert!(finalize_tasks.is_some() && finalize_tasks == indexed_tasks);
}

#[test]
fn workloads_are_hardened_and_fail_fast_on_permanent_errors() {
    let docs = manifests();
    let accounts: BTreeSet<&str> = docs
        .iter()
        .filter(|(_, v)| v["kind"] == "ServiceAccount")
        .map(|(_, v)| s(v, "metadata.name"))
        .collect();
    let mut workloads = 0;
    for (file, v) in &docs {
        let kind = s(v, "kind");
        if kind != "Job" && kind != "CronJob" {
            continue;
        }
        workloads += 1;
        let job = match kind {
            "CronJob" => &v["spec"]["jobTemplate"]["spec"],
            _ => &v["spec"],
        };
        assert!(
            job["ttlSecondsAfterFinished"].as_u64().is_some(),
            "{file}: ttl"
        );
        // Exit codes 2 (usage/config) and 3 (identity) fail at once instead of retrying.
        let rules = job["podFailurePolicy"]["rules"]
            .as_array()
            .expect("podFailurePolicy");
        let permanent: BTreeSet<u64> = rules
            .iter()
            .filter(|r| r["action"] == "FailJob" || r["action"] == "FailIndex")
            .flat_map(|r| {
                r["onExitCodes"]["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|x| x.as_u64())
            .collect();
        assert!(
            permanent.contains(&2) && permanent.contains(&3),
            "{file}: {permanent:?}"
        );
        assert!(!permanent.contains(&75), "{file}: 75 means 'retry later'");
        let spec = pod_spec(kind, v);
        assert!(
            accounts.contains(s(spec, "serviceAccountName")),
            "{file}: account"
        );
        assert_eq!(spec["automountServiceAccountToken"], false, "{file}");
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], true, "{file}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{file}");
        let sized: BTreeSet<(&str, &str)> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["emptyDir"]["sizeLimit"].is_string())
            .map(|x| (s(x, "name"), s(x, "emptyDir.sizeLimit")))
            .collect();
        assert!(!sized.is_empty(), "{file}: an emptyDir without sizeLimit");
        for c in spec["containers"].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{file}"
            );
            let res = &c["resources"];
            assert!(res["requests"]["ephemeral-storage"].is_string(), "{file}");
            assert!(res["limits"]["ephemeral-storage"].is_string(), "{file}");
            // Temporary files go to a mounted, sized volume (the root filesystem is read-only).
            let tmpdir = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "TMPDIR")
                .map(|e| s(e, "value"))
                .unwrap_or_else(|| panic!("{file}: no TMPDIR"));
            let mounted = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                tmpdir.starts_with(s(m, "mountPath"))
                    && sized.iter().any(|(name, _)| *name == s(m, "name"))
            });
            assert!(mounted, "{file}: TMPDIR {tmpdir} is not on a sized volume");
        }
    }
    assert_eq!(workloads, 3);
    // Images: a dependency layer, a mirror for the model download, a stripped binary, and a
    // build context without virtualenvs.
    for file in ["deploy/Dockerfile", "deploy/Dockerfile.cuda"] {
        let text = read(file);
        assert!(text.contains("ARG PIP_INDEX_URL"), "{file}");
        assert!(text.contains("COPY Cargo.toml Cargo.lock ./"), "{file}");
        let steps = run_steps(file);
        assert!(
            steps.iter().any(|s| s == "strip target/release/hindsight"),
            "{file}"
        );
        let deps = steps.iter().position(|s| s.starts_with("mkdir -p src"));
        let copy = text.find("COPY . .").expect("COPY . .");
        assert!(deps.is_some() && text.find("COPY Cargo.toml").is_some_and(|i| i < copy));
    }
    assert!(read(".dockerignore").lines().any(|l| l.trim() == ".venv*/"));
}

/// `RUN` instructions of a Dockerfile, continuation lines joined.
fn run_steps(dockerfile: &str) -> Vec<String> {
    let mut steps = Vec::new();
    let mut current: Option<String> = None;
    for line in read(dockerfile).lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let body = match (&mut current, t.strip_prefix("RUN ")) {
            (None, Some(b)) => {
                current = Some(String::new());
                b
            }
            (None, None) => continue,
            (Some(_), _) => t,
        };
        let (text, more) = match body.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (body.trim(), false),
        };
        if let Some(c) = current.as_mut() {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(text);
        }
        if !more {
            steps.extend(current.take());
        }
    }
    steps
}

#[test]
fn dockerfiles_build_with_the_documented_commands() {
    let guide = read("deploy/README.md");
    let readme = read("README.md");
    let fetch = read("scripts/fetch-model.sh");
    let gguf = fetch
        .lines()
        .find_map(|l| l.strip_prefix("GGUF_NAME=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("GGUF_NAME in fetch-model.sh");
    for (file, build) in [
        ("deploy/Dockerfile", "cargo build --release --locked"),
        (
            "deploy/Dockerfile.cuda",
            "cargo build --release --locked --features cuda",
        ),
    ] {
        let steps = run_steps(file);
        assert!(
            steps.contains(&"./scripts/fetch-model.sh".to_string()),
            "{file}: {steps:?}"
        );
        assert!(steps.contains(&build.to_string()), "{file}: {steps:?}");
        // Every project build step is a command the docs tell a developer to run.
        for step in steps
            .iter()
            .filter(|s| s.starts_with("cargo ") || s.starts_with("./scripts/"))
        {
            assert!(
                guide.contains(step.as_str()),
                "deploy/README.md lacks `{step}`"
            );
            assert!(readme.contains(step.as_str()), "README.md lacks `{step}`");
        }
        let text = read(file);
        assert!(
            text.contains(&format!("/models/{gguf}")),
            "{file}: model path"
        );
        assert!(
            text.contains(&format!("HINDSIGHT_MODEL=/models/{gguf}")),
            "{file}: HINDSIGHT_MODEL"
        );
        let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(froms >= 2, "{file}: not multi-stage");
        // The image build and the docs name the same Dockerfile.
        assert!(
            guide.contains(&format!("-f {file}")),
            "deploy/README.md: docker build -f {file}"
        );
    }
    // The cuda feature the CUDA image builds exists.
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains("cuda = [\"candle-core/cuda\""),
        "no cuda feature"
    );
}
