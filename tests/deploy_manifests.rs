//! Checks the deployment files in `deploy/` against the daemon's invariants, without a cluster,
//! Docker or `systemd-analyze`: each Kubernetes overlay (`kubectl kustomize`) runs non-root on a
//! read-only root filesystem with probes on `/healthz` and `/readyz` and enough time to drain;
//! the SQLite overlay is a single replica that is recreated, never rolled; the PostgreSQL
//! overlay runs three replicas with a disruption budget and anti-affinity, the database URL from
//! a mounted Secret; image, arguments, mounts and ports agree with the Dockerfile and with
//! `config.toml` (which must load as [`Settings`], its job files as jobs); the opt-in components
//! add an audit-log job whose sink suits the overlay; the NetworkPolicy, ServiceMonitor and
//! PrometheusRule fit the pods and deploy/prometheus/alerts.yaml, and the custom resources match
//! the Prometheus Operator's CRDs (spec/prometheus-operator); every rendered manifest passes
//! `kubernetes-validate --strict` and checkov, the Dockerfile hadolint and checkov; the systemd
//! unit is `Type=notify` with a watchdog and full hardening; and no file carries a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use asana_worker::config::jobs::ValidationContext;
use asana_worker::config::settings::Settings;
use asana_worker::jobs::parse_job;
use serde::Deserialize;
use serde_yaml_ng::Value;

mod support;

/// Where the deployment files live.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One parsed YAML document and the file it came from.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        str_at(&self.value, "kind").unwrap_or("")
    }

    fn name(&self) -> &str {
        str_at(&self.value, "metadata.name").unwrap_or("")
    }
}

/// The documents of one YAML text, tagged with `file`.
fn parse_docs(file: &str, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            file: file.to_string(),
            value,
        });
    }
    docs
}

/// The overlays operators apply.
const OVERLAYS: [&str; 2] = ["sqlite", "postgres-ha"];

/// The manifests of `overlay` as `kubectl kustomize` renders them; None when kubectl is missing
/// (outside CI).
fn rendered(overlay: &str) -> Option<String> {
    let kubectl = support::tools::deploy_tool("kubectl")?;
    let dir = deploy_dir().join("kubernetes/overlays").join(overlay);
    Some(kustomize(&kubectl, &dir))
}

/// The opt-in components (`deploy/kubernetes/components/`) each overlay is meant to take.
const OVERLAY_COMPONENTS: [(&str, &[&str]); 2] = [
    ("sqlite", &["audit-log-file", "audit-log-s3"]),
    ("postgres-ha", &["audit-log-s3"]),
];

/// `overlay` rendered with `components` added to its kustomization, the way an operator turns
/// one on (the files are copied, the repository is not touched); None without kubectl.
fn rendered_with(overlay: &str, components: &[&str]) -> Option<String> {
    let kubectl = support::tools::deploy_tool("kubectl")?;
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&deploy_dir().join("kubernetes"), copy.path());
    let dir = copy.path().join("overlays").join(overlay);
    let kustomization = dir.join("kustomization.yaml");
    let mut text = read(&kustomization);
    text.push_str("components:\n");
    for component in components {
        text.push_str(&format!("  - ../../components/{component}\n"));
    }
    std::fs::write(&kustomization, text).unwrap();
    Some(kustomize(&kubectl, &dir))
}

/// Copies the files under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `kubectl kustomize dir`, asserting success.
fn kustomize(kubectl: &Path, dir: &Path) -> String {
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The example Secrets (not part of any overlay).
fn example_secrets() -> Vec<Doc> {
    let path = deploy_dir().join("kubernetes/secret.example.yaml");
    parse_docs("secret.example.yaml", &read(&path))
}

/// The value at a dotted path (`spec.template.spec`); numeric segments index sequences.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) if v.is_sequence() => v.get(i),
            _ => v.get(key),
        })
}

fn str_at<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

fn seq_at<'a>(value: &'a Value, path: &str) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The `CMD` of the Dockerfile's final stage, and its `ENTRYPOINT`, as JSON arrays.
fn dockerfile_exec() -> (Vec<String>, Vec<String>) {
    let text = read(&deploy_dir().join("Dockerfile"));
    let mut entrypoint = None;
    let mut cmd = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("FROM ") {
            entrypoint = None;
            cmd = None;
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = Some(serde_json::from_str::<Vec<String>>(rest).expect("exec form"));
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = Some(serde_json::from_str::<Vec<String>>(rest).expect("exec form"));
        }
    }
    (
        entrypoint.expect("the final stage has an ENTRYPOINT"),
        cmd.expect("the final stage has a CMD"),
    )
}

/// The value after `--config` in an argument list.
fn config_arg(args: &[String]) -> Option<&str> {
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Loads a `config.toml` text as the daemon would (without environment overrides) and
/// validates it.
fn settings_from(text: &str, origin: &str) -> Settings {
    let settings: Settings =
        toml::from_str(text).unwrap_or_else(|e| panic!("{origin} is not a valid config.toml: {e}"));
    settings
        .validate()
        .unwrap_or_else(|e| panic!("{origin} does not validate: {e}"));
    settings
}

/// The `config.toml` key of a ConfigMap (a key with a dot, so not reachable through [`at`]).
fn config_toml(doc: &Doc) -> Option<&str> {
    at(&doc.value, "data")?.get("config.toml")?.as_str()
}

/// The settings in the ConfigMap, and the ConfigMap holding the job files.
fn configmaps(docs: &[Doc]) -> (Settings, &Doc) {
    let maps: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "ConfigMap").collect();
    let config = maps
        .iter()
        .find(|d| config_toml(d).is_some())
        .expect("a ConfigMap with a config.toml key");
    let text = config_toml(config).unwrap();
    let settings = settings_from(text, "configmap.yaml config.toml");
    let jobs = maps
        .iter()
        .find(|d| {
            at(&d.value, "data")
                .and_then(Value::as_mapping)
                .is_some_and(|m| {
                    m.keys().any(|k| {
                        k.as_str().is_some_and(|k| k.ends_with(".toml"))
                            && k.as_str() != Some("config.toml")
                    })
                })
        })
        .expect("a ConfigMap with job files");
    (settings, jobs)
}

/// A pod's volume, by name.
fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    seq_at(pod, "volumes")
        .iter()
        .find(|v| str_at(v, "name") == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mounted at `path` in `container`, with its mount.
fn mount_at<'a>(
    pod: &'a Value,
    container: &'a Value,
    path: &str,
) -> Option<(&'a Value, &'a Value)> {
    seq_at(container, "volumeMounts")
        .iter()
        .find(|m| str_at(m, "mountPath") == Some(path))
        .map(|m| (m, volume(pod, str_at(m, "name").unwrap_or(""))))
}

/// The invariants both Deployments share.
fn check_deployment(doc: &Doc, settings: &Settings, jobs_map: &Doc, secrets: &[&Doc]) {
    let file = &doc.file;
    let pod = at(&doc.value, "spec.template.spec").expect("a pod template");
    let selector = at(&doc.value, "spec.selector.matchLabels").expect("a selector");
    let labels = at(&doc.value, "spec.template.metadata.labels").expect("pod labels");
    for (key, value) in selector.as_mapping().expect("labels") {
        assert_eq!(
            labels.get(key),
            Some(value),
            "{file}: selector matches the pod"
        );
    }

    // Pod security.
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").and_then(Value::as_bool),
        Some(true),
        "{file}: pod runAsNonRoot"
    );
    let uid = at(pod, "securityContext.runAsUser").and_then(Value::as_u64);
    assert!(
        uid.is_some_and(|u| u > 0),
        "{file}: pod runs as a non-zero UID"
    );
    assert_eq!(
        str_at(pod, "securityContext.seccompProfile.type"),
        Some("RuntimeDefault"),
        "{file}: seccomp RuntimeDefault"
    );
    assert_eq!(
        at(pod, "automountServiceAccountToken").and_then(Value::as_bool),
        Some(false),
        "{file}: no Kubernetes API token in the pod"
    );

    // Time to drain.
    let grace = at(pod, "terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > 25 && grace > settings.worker.shutdown_grace_secs,
        "{file}: terminationGracePeriodSeconds ({grace}) must exceed the drain grace ({} s)",
        settings.worker.shutdown_grace_secs
    );

    let containers = seq_at(pod, "containers");
    assert_eq!(containers.len(), 1, "{file}: one container");
    let container = &containers[0];

    let security = at(container, "securityContext").expect("container securityContext");
    assert_eq!(
        at(security, "readOnlyRootFilesystem").and_then(Value::as_bool),
        Some(true),
        "{file}: readOnlyRootFilesystem"
    );
    assert_eq!(
        at(security, "allowPrivilegeEscalation").and_then(Value::as_bool),
        Some(false),
        "{file}: allowPrivilegeEscalation false"
    );
    assert!(
        at(security, "privileged").and_then(Value::as_bool) != Some(true),
        "{file}: not privileged"
    );
    let dropped: Vec<&str> = seq_at(security, "capabilities.drop")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(dropped.contains(&"ALL"), "{file}: drops ALL capabilities");
    assert!(
        seq_at(security, "capabilities.add").is_empty(),
        "{file}: adds no capabilities"
    );
    if let Some(user) = at(security, "runAsUser").and_then(Value::as_u64) {
        assert!(user > 0, "{file}: container runs as a non-zero UID");
    }

    // Image and arguments agree with the Dockerfile.
    let (entrypoint, cmd) = dockerfile_exec();
    assert_eq!(entrypoint, ["asana-worker"], "Dockerfile ENTRYPOINT");
    assert!(
        at(container, "command").is_none(),
        "{file}: keep the image's ENTRYPOINT"
    );
    let args: Vec<String> = seq_at(container, "args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect();
    assert_eq!(args, cmd, "{file}: args are the Dockerfile's CMD");
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "{file}: runs the daemon"
    );
    let config_path = config_arg(&args).expect("--config in args");

    // config.toml and the job files are mounted where the arguments and settings say.
    let (config_mount, config_volume) =
        mount_at(pod, container, config_path).expect("config.toml mounted at the --config path");
    let config_key = str_at(config_mount, "subPath").expect("config.toml mounted by subPath");
    let config_map_name = str_at(config_volume, "configMap.name").expect("from a ConfigMap");
    assert_eq!(config_key, "config.toml");
    assert_eq!(config_map_name, "asana-worker-config");
    let jobs_dir = settings.jobs.dir.to_str().expect("UTF-8 jobs dir");
    let (jobs_mount, jobs_volume) =
        mount_at(pod, container, jobs_dir).expect("the jobs ConfigMap mounted at jobs.dir");
    assert!(
        str_at(jobs_mount, "subPath").is_none(),
        "{file}: job files mounted as a directory so updates reach the pod"
    );
    assert_eq!(str_at(jobs_volume, "configMap.name"), Some(jobs_map.name()));

    // Credentials: each token_file lies in a mounted Secret that has that key.
    for (name, credential) in &settings.credentials {
        assert!(
            credential.token_env.is_none(),
            "{file}: credential {name} should come from a mounted file"
        );
        let token_file = credential.token_file.as_deref().expect("token_file");
        let dir = token_file
            .parent()
            .and_then(Path::to_str)
            .expect("a directory");
        let key = token_file
            .file_name()
            .and_then(|k| k.to_str())
            .expect("a file");
        let (_, secret_volume) = mount_at(pod, container, dir)
            .unwrap_or_else(|| panic!("{file}: nothing mounted at {dir} for credential {name}"));
        let secret_name = str_at(secret_volume, "secret.secretName").expect("a Secret volume");
        let secret = secrets
            .iter()
            .find(|s| s.name() == secret_name)
            .unwrap_or_else(|| panic!("{file}: secret.example.yaml has no Secret {secret_name}"));
        assert!(
            at(&secret.value, &format!("stringData.{key}")).is_some(),
            "{file}: Secret {secret_name} has no key {key} for credential {name}"
        );
    }

    // Probes reach the admin server.
    let port = settings.admin.listen.port();
    assert!(
        !settings.admin.listen.ip().is_loopback(),
        "{file}: probes cannot reach a loopback admin server"
    );
    let ports = seq_at(container, "ports");
    let admin_port = ports
        .iter()
        .find(|p| at(p, "containerPort").and_then(Value::as_u64) == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("{file}: containerPort {port} (admin.listen)"));
    let port_name = str_at(admin_port, "name").expect("a named port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(container, &format!("{probe}.httpGet"))
            .unwrap_or_else(|| panic!("{file}: {probe} is an httpGet"));
        assert_eq!(str_at(get, "path"), Some(path), "{file}: {probe} path");
        let probe_port = at(get, "port").expect("probe port");
        assert!(
            probe_port.as_str() == Some(port_name) || probe_port.as_u64() == Some(u64::from(port)),
            "{file}: {probe} targets the admin port"
        );
    }

    // Resources.
    for key in ["requests.cpu", "requests.memory", "limits.memory"] {
        assert!(
            at(container, &format!("resources.{key}")).is_some(),
            "{file}: resources.{key}"
        );
    }

    // Environment: nothing secret as a literal value (a variable naming a *file* that holds a
    // secret, `*_FILE`, is a path, not a secret).
    for env in seq_at(container, "env") {
        let name = str_at(env, "name").unwrap_or("");
        if at(env, "value").is_some() && !name.ends_with("_FILE") {
            let upper = name.to_ascii_uppercase();
            for word in ["TOKEN", "SECRET", "PASSWORD", "KEY", "DATABASE__URL"] {
                assert!(
                    !upper.contains(word),
                    "{file}: {name} must come from a Secret (valueFrom), not a literal value"
                );
            }
        }
    }
}

/// What every overlay holds: one namespace for everything, the Deployment's invariants, the
/// Service, NetworkPolicy, ServiceMonitor and PrometheusRule fitting the pods, the overlay's
/// image rewrite. Returns the Deployment's document index and the settings.
fn check_overlay(overlay: &str, docs: &[Doc]) -> (usize, Settings) {
    let namespace = docs
        .iter()
        .find(|d| d.kind() == "Namespace")
        .map(|d| d.name().to_string())
        .unwrap_or_else(|| panic!("{overlay}: a Namespace"));
    for doc in docs {
        assert!(
            str_at(&doc.value, "apiVersion").is_some() && !doc.name().is_empty(),
            "{overlay}: every object has apiVersion and a name"
        );
        if doc.kind() != "Namespace" {
            assert_eq!(
                str_at(&doc.value, "metadata.namespace"),
                Some(namespace.as_str()),
                "{overlay}: {} {} is in the namespace",
                doc.kind(),
                doc.name()
            );
        }
    }
    let (settings, jobs_map) = configmaps(docs);
    let secrets = example_secrets();
    let secret_refs: Vec<&Doc> = secrets.iter().collect();
    let deployments: Vec<usize> = (0..docs.len())
        .filter(|i| docs[*i].kind() == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "{overlay}: one Deployment");
    let deployment = &docs[deployments[0]];
    check_deployment(deployment, &settings, jobs_map, &secret_refs);
    let pod_labels = at(&deployment.value, "spec.template.metadata.labels").unwrap();
    let selects_pods = |selector: Option<&Value>, what: &str| {
        for (key, value) in selector
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{overlay}: {what} has a selector"))
        {
            assert_eq!(
                pod_labels.get(key),
                Some(value),
                "{overlay}: {what} selects the pods"
            );
        }
    };
    let container = &seq_at(
        at(&deployment.value, "spec.template.spec").unwrap(),
        "containers",
    )[0];
    let port_names: BTreeSet<&str> = seq_at(container, "ports")
        .iter()
        .filter_map(|p| str_at(p, "name"))
        .collect();

    // The Service selects the pods and targets the admin port by name.
    let service = docs
        .iter()
        .find(|d| d.kind() == "Service")
        .expect("a Service");
    selects_pods(at(&service.value, "spec.selector"), "the Service");
    let service_ports: BTreeSet<&str> = seq_at(&service.value, "spec.ports")
        .iter()
        .map(|port| {
            let target = str_at(port, "targetPort").expect("a named targetPort");
            assert!(port_names.contains(target), "Service targetPort {target}");
            str_at(port, "name").expect("a named Service port")
        })
        .collect();

    // The NetworkPolicy covers the pods, lets scrapes reach the admin port only, and lets the
    // daemon reach DNS and HTTPS.
    let policy = docs
        .iter()
        .find(|d| d.kind() == "NetworkPolicy")
        .expect("a NetworkPolicy");
    selects_pods(
        at(&policy.value, "spec.podSelector.matchLabels"),
        "the NetworkPolicy",
    );
    let types: Vec<&str> = seq_at(&policy.value, "spec.policyTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        types,
        ["Ingress", "Egress"],
        "{overlay}: both directions restricted"
    );
    let ingress = seq_at(&policy.value, "spec.ingress");
    assert!(!ingress.is_empty(), "{overlay}: scrapes are admitted");
    for rule in ingress {
        // Each source names a namespace *and* pods in one peer (both must match): the
        // Prometheus pods of the monitoring namespace, not every pod there, nor every
        // namespace's Prometheus.
        let peers = seq_at(rule, "from");
        assert!(
            !peers.is_empty(),
            "{overlay}: ingress from named peers only"
        );
        for peer in peers {
            assert!(
                at(peer, "namespaceSelector").is_some() && at(peer, "podSelector").is_some(),
                "{overlay}: ingress peer {peer:?} selects both a namespace and pods"
            );
            assert!(
                at(peer, "ipBlock").is_none(),
                "{overlay}: no address ranges"
            );
        }
        let ports = seq_at(rule, "ports");
        assert!(!ports.is_empty(), "{overlay}: ingress names its ports");
        for port in ports {
            let port = at(port, "port").unwrap();
            assert!(
                port.as_str().is_some_and(|p| port_names.contains(p)),
                "{overlay}: ingress only to the admin port, got {port:?}"
            );
        }
    }
    let egress_ports: BTreeSet<u64> = seq_at(&policy.value, "spec.egress")
        .iter()
        .flat_map(|rule| seq_at(rule, "ports").iter())
        .filter_map(|p| at(p, "port").and_then(Value::as_u64))
        .collect();
    for needed in [53, 443] {
        assert!(
            egress_ports.contains(&needed),
            "{overlay}: egress to port {needed}"
        );
    }

    // The ServiceMonitor scrapes the Service's port at /metrics as job="asana-worker", which
    // the alerts match on.
    let monitor = docs
        .iter()
        .find(|d| d.kind() == "ServiceMonitor")
        .expect("a ServiceMonitor");
    selects_pods(
        at(&monitor.value, "spec.selector.matchLabels"),
        "the ServiceMonitor",
    );
    let endpoint = &seq_at(&monitor.value, "spec.endpoints")[0];
    assert!(service_ports.contains(str_at(endpoint, "port").unwrap()));
    assert_eq!(str_at(endpoint, "path"), Some("/metrics"));
    assert!(
        seq_at(endpoint, "relabelings")
            .iter()
            .any(|r| str_at(r, "targetLabel") == Some("job")
                && str_at(r, "replacement") == Some("asana-worker")),
        "{overlay}: the scrape job is asana-worker"
    );

    // The PrometheusRule is deploy/prometheus/alerts.yaml, which promtool tests
    // (tests/alert_rules.rs).
    let rule = docs
        .iter()
        .find(|d| d.kind() == "PrometheusRule")
        .expect("a PrometheusRule");
    let alerts: Value =
        serde_yaml_ng::from_str(&read(&deploy_dir().join("prometheus/alerts.yaml"))).unwrap();
    assert_eq!(
        at(&rule.value, "spec.groups"),
        at(&alerts, "groups"),
        "base/prometheusrule.yaml must hold deploy/prometheus/alerts.yaml's groups; copy them over"
    );

    // The overlay points the image at a registry.
    let kustomization: Value = serde_yaml_ng::from_str(&read(
        &deploy_dir()
            .join("kubernetes/overlays")
            .join(overlay)
            .join("kustomization.yaml"),
    ))
    .unwrap();
    let image = str_at(container, "image").expect("an image");
    let rewritten: Vec<&str> = seq_at(&kustomization, "images")
        .iter()
        .filter_map(|i| str_at(i, "newName"))
        .collect();
    assert!(
        rewritten.iter().any(|name| image.starts_with(name)),
        "{overlay}: its kustomization rewrites the image ({image})"
    );
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{overlay}: the image is this release's ({image}); bump newTag with Cargo.toml's version"
    );
    assert!(
        !seq_at(&kustomization, "resources")
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("secret.example"))),
        "{overlay}: the example Secret is not applied"
    );
    (deployments[0], settings)
}

#[test]
fn the_sqlite_overlay_runs_one_replica_on_its_own_volume() {
    let Some(text) = rendered("sqlite") else {
        return;
    };
    let docs = parse_docs("sqlite", &text);
    let (index, settings) = check_overlay("sqlite", &docs);
    let sqlite = &docs[index];
    assert_eq!(
        at(&sqlite.value, "spec.replicas").and_then(Value::as_u64),
        Some(1),
        "SQLite allows one replica"
    );
    assert_eq!(
        str_at(&sqlite.value, "spec.strategy.type"),
        Some("Recreate"),
        "a rolling update would run two pods on one SQLite file"
    );
    let sqlite_path = settings
        .database
        .url
        .strip_prefix("sqlite://")
        .expect("the ConfigMap's database is SQLite");
    assert!(
        sqlite_path.starts_with('/'),
        "SQLite path is absolute: {sqlite_path}"
    );
    let sqlite_dir = Path::new(sqlite_path)
        .parent()
        .and_then(Path::to_str)
        .expect("an absolute SQLite path");
    let pod = at(&sqlite.value, "spec.template.spec").unwrap();
    let container = &seq_at(pod, "containers")[0];
    let (_, data) = mount_at(pod, container, sqlite_dir).expect("a volume at the SQLite directory");
    let claim = str_at(data, "persistentVolumeClaim.claimName").expect("the file lives on a claim");
    let pvc = docs
        .iter()
        .find(|d| d.kind() == "PersistentVolumeClaim" && d.name() == claim)
        .expect("the claim is in the overlay");
    assert!(
        seq_at(&pvc.value, "spec.accessModes")
            .iter()
            .any(|m| m.as_str() == Some("ReadWriteOnce")),
        "the claim is ReadWriteOnce"
    );
}

#[test]
fn the_postgres_overlay_runs_three_spread_replicas_with_a_disruption_budget() {
    let Some(text) = rendered("postgres-ha") else {
        return;
    };
    let docs = parse_docs("postgres-ha", &text);
    let (index, _) = check_overlay("postgres-ha", &docs);
    let postgres = &docs[index];
    assert_eq!(
        at(&postgres.value, "spec.replicas").and_then(Value::as_u64),
        Some(3)
    );
    assert_eq!(
        str_at(&postgres.value, "spec.strategy.type"),
        Some("RollingUpdate")
    );
    let pod = at(&postgres.value, "spec.template.spec").unwrap();
    assert!(
        !seq_at(
            pod,
            "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution"
        )
        .is_empty(),
        "replicas are kept apart"
    );
    let container = &seq_at(pod, "containers")[0];
    let env = seq_at(container, "env");
    // The URL comes from a mounted Secret through database.url_file, never from the
    // environment.
    assert!(
        env.iter()
            .all(|e| str_at(e, "name") != Some("ASANA_WORKER__DATABASE__URL")),
        "no database URL (and password) in the environment"
    );
    let url_file = env
        .iter()
        .find(|e| str_at(e, "name") == Some("ASANA_WORKER__DATABASE__URL_FILE"))
        .and_then(|e| str_at(e, "value"))
        .expect("ASANA_WORKER__DATABASE__URL_FILE in the PostgreSQL overlay");
    let (mount_dir, secret_key) = url_file.rsplit_once('/').expect("a path");
    let (_, volume) = mount_at(pod, container, mount_dir).expect("the file's directory is mounted");
    let secret_name = str_at(volume, "secret.secretName").expect("from a Secret");
    let secrets = example_secrets();
    let secret = secrets
        .iter()
        .find(|s| s.kind() == "Secret" && s.name() == secret_name)
        .expect("the database Secret is in secret.example.yaml");
    let example_url = str_at(&secret.value, &format!("stringData.{secret_key}")).expect("url");
    assert!(example_url.starts_with("postgres://"), "{example_url}");
    assert!(
        seq_at(pod, "volumes")
            .iter()
            .all(|v| at(v, "persistentVolumeClaim").is_none()),
        "replicas must not share a ReadWriteOnce claim"
    );
    // The pods reach PostgreSQL.
    let policy = docs.iter().find(|d| d.kind() == "NetworkPolicy").unwrap();
    assert!(
        seq_at(&policy.value, "spec.egress")
            .iter()
            .flat_map(|rule| seq_at(rule, "ports").iter())
            .any(|p| at(p, "port").and_then(Value::as_u64) == Some(5432)),
        "egress to PostgreSQL (5432)"
    );
    let pdb = docs
        .iter()
        .find(|d| d.kind() == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget");
    assert_eq!(
        at(&pdb.value, "spec.maxUnavailable").and_then(Value::as_u64),
        Some(1)
    );
    let pod_labels = at(&postgres.value, "spec.template.metadata.labels").unwrap();
    for (key, value) in at(&pdb.value, "spec.selector.matchLabels")
        .and_then(Value::as_mapping)
        .unwrap()
    {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "the budget covers the pods"
        );
    }
}

/// A gid standing for the `WORKSPACE_GID` placeholder of the example job files.
const EXAMPLE_GID: &str = "1200000000000001";

/// What is wrong with the job files of a rendered overlay: each must be a valid job (the
/// examples' placeholder gid filled in), and each sink must suit the pods: a `file` sink's
/// directory on a PersistentVolumeClaim (shared by every replica, so ReadWriteMany, when there
/// are several), an `s3` sink's key variables set from a Secret that secret.example.yaml
/// describes. Returns the job names and the problems.
fn job_problems(overlay: &str, docs: &[Doc]) -> (BTreeSet<String>, Vec<String>) {
    let (settings, jobs_map) = configmaps(docs);
    let deployment = docs.iter().find(|d| d.kind() == "Deployment").unwrap();
    let replicas = at(&deployment.value, "spec.replicas")
        .and_then(Value::as_u64)
        .unwrap();
    let pod = at(&deployment.value, "spec.template.spec").unwrap();
    let container = &seq_at(pod, "containers")[0];
    let secrets = example_secrets();
    let context = ValidationContext {
        credentials: settings.credentials.keys().cloned().collect(),
        ..ValidationContext::default()
    };
    // The pod's writable mounts are taken to a scratch directory, so the job's own check that
    // a sink's directory is writable runs here too.
    let scratch = tempfile::tempdir().unwrap();
    let data = at(&jobs_map.value, "data")
        .and_then(Value::as_mapping)
        .expect("job files");
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for (key, text) in data {
        let key = key.as_str().expect("string keys");
        let text = text.as_str().expect("text");
        if !key.ends_with(".toml") {
            problems.push(format!("{overlay}: only *.toml files are read: {key}"));
            continue;
        }
        let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{key}: {e}"));
        let sinks = ["sink", "deliver"]
            .iter()
            .filter_map(|name| table.get("settings")?.get(*name)?.as_table());
        let mut local = text.replace("WORKSPACE_GID", EXAMPLE_GID);
        for sink in sinks {
            let field = |name: &str| sink.get(name).and_then(toml::Value::as_str);
            match field("type") {
                Some("file") => {
                    let dir = field("dir").unwrap_or("");
                    let mount = seq_at(container, "volumeMounts")
                        .iter()
                        .filter(|m| str_at(m, "mountPath").is_some_and(|p| dir.starts_with(p)))
                        .max_by_key(|m| str_at(m, "mountPath").unwrap().len());
                    let Some(mount) = mount else {
                        problems.push(format!("{overlay}: {key}: file sink {dir} is on no volume"));
                        continue;
                    };
                    let mount_path = str_at(mount, "mountPath").unwrap();
                    let volume = volume(pod, str_at(mount, "name").unwrap());
                    let claim = str_at(volume, "persistentVolumeClaim.claimName");
                    let modes: Vec<&str> = claim
                        .and_then(|claim| {
                            docs.iter()
                                .find(|d| d.kind() == "PersistentVolumeClaim" && d.name() == claim)
                        })
                        .map(|pvc| {
                            seq_at(&pvc.value, "spec.accessModes")
                                .iter()
                                .filter_map(Value::as_str)
                                .collect()
                        })
                        .unwrap_or_default();
                    if claim.is_none() {
                        problems.push(format!(
                            "{overlay}: {key}: file sink {dir} is on a volume that dies with the pod"
                        ));
                    } else if replicas > 1 && !modes.contains(&"ReadWriteMany") {
                        problems.push(format!(
                            "{overlay}: {key}: file sink {dir} is on a claim the {replicas} replicas do not share ({modes:?})"
                        ));
                    }
                    local = local.replace(
                        mount_path,
                        &scratch
                            .path()
                            .join(mount_path.trim_start_matches('/'))
                            .display()
                            .to_string(),
                    );
                }
                Some("s3") => {
                    for (setting, default) in [
                        ("access_key_id_env", "AWS_ACCESS_KEY_ID"),
                        ("secret_access_key_env", "AWS_SECRET_ACCESS_KEY"),
                    ] {
                        let variable = field(setting).unwrap_or(default);
                        let from = seq_at(container, "env")
                            .iter()
                            .find(|e| str_at(e, "name") == Some(variable))
                            .and_then(|e| at(e, "valueFrom.secretKeyRef"));
                        let example = from.and_then(|from| {
                            let secret = secrets.iter().find(|s| {
                                s.kind() == "Secret" && Some(s.name()) == str_at(from, "name")
                            })?;
                            at(&secret.value, "stringData")?.get(str_at(from, "key")?)
                        });
                        if example.is_none() {
                            problems.push(format!(
                                "{overlay}: {key}: s3 sink's {variable} is not set from a Secret of secret.example.yaml"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let path = settings.jobs.dir.join(key);
        match parse_job(&path, &local, &context) {
            Ok(job) => {
                if !names.insert(job.name.clone()) {
                    problems.push(format!("{overlay}: duplicate job name {}", job.name));
                }
            }
            Err(found) => {
                let text: Vec<String> = found.iter().map(ToString::to_string).collect();
                problems.push(format!(
                    "{overlay}: {key} is not a valid job:\n{}",
                    text.join("\n")
                ));
            }
        }
    }
    (names, problems)
}

/// The job files every overlay ships are valid jobs with sinks that suit it, alone and with
/// each opt-in component it is meant to take; and the placeholders of the components are not
/// applied unless asked for (the daemon would refuse a job set with a placeholder gid).
#[test]
fn example_job_files_are_valid_jobs_with_sinks_that_suit_the_overlay() {
    for (overlay, components) in OVERLAY_COMPONENTS {
        let Some(text) = rendered(overlay) else {
            return;
        };
        let docs = parse_docs(overlay, &text);
        let (names, problems) = job_problems(overlay, &docs);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(!names.is_empty(), "{overlay}: some jobs");
        assert!(
            !names.contains("audit-log"),
            "{overlay}: the audit-log example is opt-in"
        );
        for component in components {
            let text = rendered_with(overlay, &[component]).unwrap();
            let docs = parse_docs(overlay, &text);
            check_overlay(overlay, &docs);
            let (with, problems) = job_problems(overlay, &docs);
            assert!(problems.is_empty(), "{component}: {}", problems.join("\n"));
            assert_eq!(
                with.difference(&names).collect::<Vec<_>>(),
                ["audit-log"],
                "{overlay} with {component}: the component adds its job"
            );
        }
    }
}

/// With three replicas a file sink on a pod's own volume would split the stream between pods:
/// the check above rejects `components/audit-log-file` in the PostgreSQL overlay.
#[test]
fn a_file_sink_on_a_replica_s_own_volume_is_refused() {
    let Some(text) = rendered_with("postgres-ha", &["audit-log-file"]) else {
        return;
    };
    let (_, problems) = job_problems("postgres-ha", &parse_docs("postgres-ha", &text));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("audit-log.toml") && p.contains("dies with the pod")),
        "{problems:?}"
    );
    // And an s3 sink whose keys the pod does not get is refused too: the sqlite overlay with
    // the s3 job but without the component's environment.
    let text = rendered_with("sqlite", &["audit-log-s3"]).unwrap();
    let mut docs = parse_docs("sqlite", &text);
    let deployment = docs.iter_mut().find(|d| d.kind() == "Deployment").unwrap();
    deployment
        .value
        .get_mut("spec")
        .and_then(|v| v.get_mut("template"))
        .and_then(|v| v.get_mut("spec"))
        .and_then(|v| v.get_mut("containers"))
        .and_then(|v| v.get_mut(0))
        .and_then(Value::as_mapping_mut)
        .unwrap()
        .remove("env");
    let (_, problems) = job_problems("sqlite", &docs);
    assert!(
        problems.iter().any(|p| p.contains("AWS_ACCESS_KEY_ID")),
        "{problems:?}"
    );
}

/// Runs a tool, asserting success with its output.
fn run_tool(tool: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} {args:?}:\n{text}", tool.display());
    text
}

/// The custom resources of the Prometheus Operator the overlays create.
const CUSTOM_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

/// `schema` (a CRD's `openAPIV3Schema`, OpenAPI 3.0) as a strict JSON Schema: an object schema
/// that lists its properties admits no others unless it says
/// `x-kubernetes-preserve-unknown-fields` (what the API server does with
/// `kubectl apply --validate=strict`), and `nullable` admits null. CEL rules
/// (`x-kubernetes-validations`) and patterns with RE2's inline flags are not checked.
fn strict_schema(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match schema {
        Json::Object(map) => {
            let mut out: serde_json::Map<String, Json> = map
                .iter()
                .map(|(key, value)| {
                    let value = match key.as_str() {
                        // Maps of schemas, lists of schemas, and single schemas.
                        "properties" | "patternProperties" => Json::Object(
                            value
                                .as_object()
                                .into_iter()
                                .flatten()
                                .map(|(name, schema)| (name.clone(), strict_schema(schema)))
                                .collect(),
                        ),
                        "items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf" => {
                            strict_schema(value)
                        }
                        _ => value.clone(),
                    };
                    (key.clone(), value)
                })
                // Go's regular expressions (RE2) take inline flags such as `(?i)`; JSON
                // Schema's (ECMA-262) do not, so such a pattern is left to the API server.
                .filter(|(key, value)| {
                    key != "pattern" || !value.as_str().is_some_and(|p| p.contains("(?"))
                })
                .collect();
            let preserves =
                map.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserves
            {
                out.insert("additionalProperties".into(), Json::Bool(false));
            }
            if map.get("nullable") == Some(&Json::Bool(true))
                && let Some(Json::String(kind)) = map.get("type")
            {
                out.insert("type".into(), serde_json::json!([kind, "null"]));
            }
            Json::Object(out)
        }
        Json::Array(items) => Json::Array(items.iter().map(strict_schema).collect()),
        other => other.clone(),
    }
}

/// The strict validator of `kind` at `api_version` (`group/version`), from the Prometheus
/// Operator's CRDs in spec/prometheus-operator (see SOURCE.md there).
fn custom_resource_validator(kind: &str, api_version: &str) -> jsonschema::Validator {
    let (group, version) = api_version.split_once('/').expect("group/version");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/prometheus-operator");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let crd = files
        .iter()
        .flat_map(|path| parse_docs(&path.display().to_string(), &read(path)))
        .find(|doc| {
            doc.kind() == "CustomResourceDefinition"
                && str_at(&doc.value, "spec.group") == Some(group)
                && str_at(&doc.value, "spec.names.kind") == Some(kind)
        })
        .unwrap_or_else(|| panic!("no CRD for {kind} in {group} in {}", dir.display()));
    let served = seq_at(&crd.value, "spec.versions")
        .iter()
        .find(|v| str_at(v, "name") == Some(version))
        .unwrap_or_else(|| panic!("{}: {kind} has no version {version}", crd.file));
    assert_eq!(
        at(served, "served").and_then(Value::as_bool),
        Some(true),
        "{kind} {version} is served"
    );
    let schema = at(served, "schema.openAPIV3Schema").expect("an openAPIV3Schema");
    let schema = strict_schema(&serde_json::to_value(schema).unwrap());
    jsonschema::draft4::options()
        .build(&schema)
        .unwrap_or_else(|e| panic!("{kind}'s schema does not compile: {e}"))
}

/// The problems `validator` finds in `doc`, one `path: message` a line.
fn schema_problems(validator: &jsonschema::Validator, doc: &Doc) -> Vec<String> {
    let instance = serde_json::to_value(&doc.value).unwrap();
    validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

/// The ServiceMonitor and PrometheusRule of every overlay match the Prometheus Operator's CRD
/// schemas, strictly: kubernetes-validate knows only the built-in kinds, and a misspelt field
/// in a custom resource would otherwise be found only by the API server. A misspelt field and a
/// wrong type are rejected, so the check itself is shown to work.
#[test]
fn custom_resources_match_the_prometheus_operator_crds() {
    for overlay in OVERLAYS {
        let Some(text) = rendered(overlay) else {
            return;
        };
        let docs = parse_docs(overlay, &text);
        for kind in CUSTOM_KINDS {
            let doc = docs
                .iter()
                .find(|d| d.kind() == kind)
                .unwrap_or_else(|| panic!("{overlay}: a {kind}"));
            let api_version = str_at(&doc.value, "apiVersion").unwrap();
            let validator = custom_resource_validator(kind, api_version);
            let problems = schema_problems(&validator, doc);
            assert!(
                problems.is_empty(),
                "{overlay}: {kind} does not match its CRD:\n{}",
                problems.join("\n")
            );
            // Break it twice: a field the CRD does not know, and a string where a list goes.
            let (path, field) = match kind {
                "ServiceMonitor" => ("spec.endpoints.0", "intervall"),
                _ => ("spec.groups.0.rules.0", "annotation"),
            };
            let mut misspelt = Doc {
                file: doc.file.clone(),
                value: doc.value.clone(),
            };
            let mut target = &mut misspelt.value;
            for key in path.split('.') {
                target = match key.parse::<usize>() {
                    Ok(i) => target.get_mut(i).unwrap(),
                    Err(_) => target.get_mut(key).unwrap(),
                };
            }
            target
                .as_mapping_mut()
                .unwrap()
                .insert(Value::from(field), Value::from("x"));
            let problems = schema_problems(&validator, &misspelt);
            assert!(
                problems.iter().any(|p| p.contains(field)),
                "{kind}: the unknown field {field} at {path} is reported: {problems:?}"
            );
            let mut wrong_type = Doc {
                file: doc.file.clone(),
                value: doc.value.clone(),
            };
            let list = if kind == "ServiceMonitor" {
                "endpoints"
            } else {
                "groups"
            };
            wrong_type
                .value
                .get_mut("spec")
                .and_then(Value::as_mapping_mut)
                .unwrap()
                .insert(Value::from(list), Value::from("x"));
            assert!(
                !schema_problems(&validator, &wrong_type).is_empty(),
                "{kind}: spec.{list} must be a list"
            );
        }
    }
}

/// Every rendered manifest of every overlay passes `kubernetes-validate --strict` (the custom
/// resources, ServiceMonitor and PrometheusRule, have no schema there: the test above checks
/// them against the Prometheus Operator's CRDs, and promtool checks the rules) and checkov
/// (findings fixed, or skipped with a reason in the manifest and docs/operations.md).
#[test]
fn rendered_manifests_pass_kubernetes_validate_and_checkov() {
    let (Some(validate), Some(checkov)) = (
        support::tools::deploy_tool("kubernetes-validate"),
        support::tools::deploy_tool("checkov"),
    ) else {
        return;
    };
    // Not a dot-directory (tempdir's default name): checkov skips those.
    let dir = tempfile::Builder::new()
        .prefix("rendered-manifests")
        .tempdir()
        .unwrap();
    // Each overlay, and each with every component it is meant to take.
    let mut renders = Vec::new();
    for (overlay, components) in OVERLAY_COMPONENTS {
        renders.push((overlay.to_string(), rendered(overlay).expect("kubectl")));
        for component in components {
            let text = rendered_with(overlay, &[component]).expect("kubectl");
            renders.push((format!("{overlay}+{component}"), text));
        }
    }
    for (name, text) in &renders {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let report = run_tool(&validate, &["--strict".as_ref(), file.as_os_str()]);
        let kinds = parse_docs(name, text).len();
        let passed = report.matches(" passed for resource ").count();
        let custom = report.matches("Couldn't find schema for kind").count();
        assert_eq!(passed + custom, kinds, "{name}: {report}");
        assert_eq!(
            custom,
            CUSTOM_KINDS.len(),
            "{name}: only the custom resources ({CUSTOM_KINDS:?}) lack a schema: {report}"
        );
    }
    let report = run_tool(
        &checkov,
        &[
            "--directory".as_ref(),
            dir.path().as_os_str(),
            "--framework".as_ref(),
            "kubernetes".as_ref(),
            "--compact".as_ref(),
            "--skip-download".as_ref(),
        ],
    );
    assert!(report.contains("Failed checks: 0"), "{report}");
    // Every file was scanned (checkov reports nothing for files it skips).
    for (name, _) in &renders {
        assert!(
            report.contains(&format!("File: /{name}.yaml:")),
            "checkov did not scan {name}: {report}"
        );
    }
    // Every finding skipped in a manifest is explained in docs/operations.md.
    let operations = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"));
    for (name, text) in &renders {
        for doc in parse_docs(name, text) {
            let annotations = at(&doc.value, "metadata.annotations").and_then(Value::as_mapping);
            for (key, value) in annotations.into_iter().flatten() {
                if !key
                    .as_str()
                    .is_some_and(|k| k.starts_with("checkov.io/skip"))
                {
                    continue;
                }
                let check = value.as_str().and_then(|v| v.split('=').next()).unwrap();
                assert!(
                    operations.contains(&format!("| {check} ")),
                    "{name}: {} skips {check}; explain it in docs/operations.md's table of skipped checkov findings",
                    doc.name()
                );
            }
        }
    }
}

/// The Dockerfile passes hadolint and checkov.
#[test]
fn the_dockerfile_passes_hadolint_and_checkov() {
    let (Some(hadolint), Some(checkov)) = (
        support::tools::deploy_tool("hadolint"),
        support::tools::deploy_tool("checkov"),
    ) else {
        return;
    };
    let dockerfile = deploy_dir().join("Dockerfile");
    run_tool(&hadolint, &[dockerfile.as_os_str()]);
    let report = run_tool(
        &checkov,
        &[
            "--file".as_ref(),
            dockerfile.as_os_str(),
            "--framework".as_ref(),
            "dockerfile".as_ref(),
            "--compact".as_ref(),
            "--skip-download".as_ref(),
        ],
    );
    assert!(report.contains("Failed checks: 0"), "{report}");
    assert!(report.contains("Passed checks: "), "{report}");
}

/// `Key=Value` lines of a unit file, by section; repeated keys keep every value in order.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut continued: Option<(String, String)> = None;
    for raw in text.lines() {
        if let Some((key, mut value)) = continued.take() {
            let line = raw.trim();
            if let Some(stripped) = line.strip_suffix('\\') {
                value.push(' ');
                value.push_str(stripped.trim());
                continued = Some((key, value));
            } else {
                value.push(' ');
                value.push_str(line);
                sections
                    .entry(section.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
                    .push(value);
            }
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a Key=Value line in the unit: {line}"));
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if let Some(stripped) = value.strip_suffix('\\') {
            continued = Some((key, stripped.trim().to_string()));
        } else {
            sections
                .entry(section.clone())
                .or_default()
                .entry(key)
                .or_default()
                .push(value);
        }
    }
    sections
}

/// Seconds in a systemd time span such as `35`, `35s`, `1min`, `1min 5s`.
fn timespan_secs(text: &str) -> u64 {
    let mut total = 0;
    for part in text.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let unit = &part[digits.len()..];
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("bad time span {text}"));
        total += n * match unit {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            other => panic!("unexpected time unit {other} in {text}"),
        };
    }
    total
}

#[test]
fn systemd_unit_is_notify_watched_and_hardened() {
    let dir = deploy_dir().join("systemd");
    let unit = parse_unit(&read(&dir.join("asana-worker.service")));
    let service = unit.get("Service").expect("[Service]");
    let single = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] {key}= is missing"));
        values.last().map(String::as_str).unwrap_or("")
    };
    assert!(
        unit.get("Install")
            .and_then(|i| i.get("WantedBy"))
            .is_some()
    );

    assert_eq!(single("Type"), "notify");
    assert_eq!(single("NotifyAccess"), "main");
    assert!(timespan_secs(single("WatchdogSec")) > 0);
    assert_eq!(single("Restart"), "on-failure");
    assert!(
        single("RestartPreventExitStatus")
            .split_whitespace()
            .any(|c| c == "2"),
        "invalid configuration (exit 2) is not restarted"
    );

    let settings = settings_from(
        &read(&dir.join("config.toml")),
        "deploy/systemd/config.toml",
    );
    let stop = timespan_secs(single("TimeoutStopSec"));
    assert!(
        stop > settings.worker.shutdown_grace_secs
            && stop <= settings.worker.shutdown_grace_secs + 30,
        "TimeoutStopSec ({stop} s) a little over the drain grace ({} s)",
        settings.worker.shutdown_grace_secs
    );
    assert!(single("ExecReload").contains("-HUP"), "reload sends SIGHUP");

    // ExecStart runs the daemon with the config file; nothing secret on the command line.
    let exec: Vec<String> = single("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(exec[0].starts_with('/') && exec[0].ends_with("/asana-worker"));
    assert_eq!(exec.get(1).map(String::as_str), Some("run"));
    let config_path = config_arg(&exec).expect("--config");
    let configuration_dir = format!("/etc/{}", single("ConfigurationDirectory"));
    assert!(config_path.starts_with(&format!("{configuration_dir}/")));
    assert!(settings.jobs.dir.starts_with(&configuration_dir));

    // Identity and state.
    let dynamic = service
        .get("DynamicUser")
        .is_some_and(|v| v.last().unwrap() == "yes");
    let user = service
        .get("User")
        .and_then(|v| v.last())
        .is_some_and(|u| u != "root" && u != "0");
    assert!(dynamic || user, "DynamicUser=yes or a dedicated User=");
    assert_eq!(single("StateDirectory"), "asana-worker");
    assert_eq!(single("UMask"), "0077");
    let database_env = service
        .get("Environment")
        .into_iter()
        .flatten()
        .find_map(|e| {
            e.trim_matches('"')
                .strip_prefix("ASANA_WORKER__DATABASE__URL=")
        })
        .expect("Environment=ASANA_WORKER__DATABASE__URL=...");
    assert_eq!(
        database_env, "sqlite:///var/lib/asana-worker/asana-worker.sqlite",
        "SQLite lives in the StateDirectory"
    );

    // Hardening.
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(single(key), expected, "[Service] {key}=");
    }
    let families: BTreeSet<&str> = single("RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    assert_eq!(families, BTreeSet::from(["AF_INET", "AF_INET6", "AF_UNIX"]));
    assert!(
        service["SystemCallFilter"]
            .iter()
            .any(|f| f == "@system-service"),
        "SystemCallFilter=@system-service"
    );

    // Every credential in config.toml is loaded by the unit into its credentials directory.
    let loaded: BTreeSet<String> = service
        .get("LoadCredential")
        .into_iter()
        .chain(service.get("LoadCredentialEncrypted"))
        .flatten()
        .map(|c| {
            c.split_once(':')
                .map_or(c.as_str(), |(name, _)| name)
                .to_string()
        })
        .collect();
    assert!(!settings.credentials.is_empty());
    for (name, credential) in &settings.credentials {
        let token_file = credential
            .token_file
            .as_deref()
            .expect("credentials from files");
        let loaded_name = token_file
            .strip_prefix("/run/credentials/asana-worker.service")
            .unwrap_or_else(|_| {
                panic!("credential {name}: token_file outside $CREDENTIALS_DIRECTORY")
            })
            .to_str()
            .unwrap();
        assert!(
            loaded.contains(loaded_name),
            "credential {name}: no LoadCredential={loaded_name}:..."
        );
    }
    for source in service.get("LoadCredential").into_iter().flatten() {
        let path = source.split_once(':').map(|(_, p)| p).expect("NAME:PATH");
        assert!(
            path.starts_with('/'),
            "LoadCredential= takes a path, not a value: {source}"
        );
    }
}

#[test]
fn the_image_is_minimal_pinned_labelled_and_runs_as_the_pods_user() {
    let text = read(&deploy_dir().join("Dockerfile"));
    let froms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    // The builder: an exact Rust release (x.y.z), not a moving tag.
    let (image, tag) = froms[0].split_once(':').expect("a tagged build image");
    assert_eq!(image, "rust");
    let version = tag.split('-').next().unwrap();
    assert_eq!(
        version.split('.').count(),
        3,
        "an exact Rust version: {tag}"
    );
    // The runtime: distroless with glibc and CA certificates (no shell, no package manager),
    // on the same Debian release as the builder, so the binary's glibc is there. Debian 13:
    // distroless supports its Debian 12 images until September 2026 only.
    assert_eq!(
        froms[1], "gcr.io/distroless/cc-debian13:nonroot",
        "the distroless cc image of Debian 13, as the non-root user"
    );
    assert!(
        tag.ends_with("-trixie"),
        "builder on Debian 13 like the runtime: {tag}"
    );
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.contains(&format!(
            "org.opencontainers.image.base.name=\"{}\"",
            froms[1]
        )),
        "the base.name label names the runtime image"
    );
    assert!(
        runtime.contains(&format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"))),
        "the image's version label defaults to the crate's version"
    );
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.base.name",
    ] {
        assert!(runtime.contains(label), "OCI label {label}");
    }
    let user = runtime
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "USER {user}");
    // The pods run as the image's user, so the state directory the image owns is theirs.
    let Some(text) = rendered("sqlite") else {
        return;
    };
    let docs = parse_docs("sqlite", &text);
    let deployment = docs.iter().find(|d| d.kind() == "Deployment").unwrap();
    let pod_uid = at(
        &deployment.value,
        "spec.template.spec.securityContext.runAsUser",
    )
    .and_then(Value::as_u64)
    .unwrap();
    assert_eq!(pod_uid.to_string(), uid, "runAsUser is the image's USER");
}

/// Placeholders allowed where a secret would go.
const PLACEHOLDER: &str = "REPLACE_WITH_";

/// Whether `text` contains something shaped like an Asana personal access token: a version
/// digit, `/`, digits (with `/` between gids in the newer format), `:`, 32 hex digits, e.g.
/// `1/1234567890123456:0123456789abcdef0123456789abcdef`.
fn has_asana_pat(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(2)).any(|i| {
        let rest = &bytes[i..];
        if !(rest[0].is_ascii_digit() && rest[1] == b'/') {
            return false;
        }
        let ids = rest[2..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'/')
            .count();
        let digits = rest[2..2 + ids]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count();
        digits >= 10
            && rest.get(2 + ids) == Some(&b':')
            && rest[3 + ids..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count()
                >= 32
    })
}

/// Passwords in URLs (`scheme://user:password@host`) that are not placeholders. BuildKit's
/// `docker-image://name:tag@sha256:…` is an image reference, not a URL with credentials.
fn url_passwords(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("://") {
        if text[..start].ends_with("docker-image") {
            continue;
        }
        let rest = &text[start + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '/')
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.starts_with(PLACEHOLDER)
        {
            found.push(password.to_string());
        }
    }
    found
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_deployment_file_holds_a_secret() {
    let mut files = Vec::new();
    all_files(&deploy_dir(), &mut files);
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"));
    assert!(files.len() >= 10);
    let simulator_secrets: Vec<String> = asana_worker::sim::config::SimConfig::default_tokens()
        .into_iter()
        .filter_map(|t| t.secret)
        .collect();
    for path in &files {
        let text = read(path);
        let shown = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display();
        assert!(!has_asana_pat(&text), "{shown} contains an Asana token");
        for secret in &simulator_secrets {
            assert!(!text.contains(secret.as_str()), "{shown} contains a token");
        }
        assert!(!text.contains("-----BEGIN"), "{shown} contains a key");
        assert_eq!(
            url_passwords(&text),
            Vec::<String>::new(),
            "{shown}: password in a URL"
        );
        assert_eq!(
            literal_bearer_tokens(&text),
            Vec::<String>::new(),
            "{shown} contains an Authorization header with a token"
        );
        if path.extension().is_some_and(|e| e == "toml") {
            let value: toml::Table = toml::from_str(&text).unwrap();
            fn no_token_keys(table: &toml::Table, shown: &str) {
                for (key, value) in table {
                    assert!(
                        !matches!(key.as_str(), "token" | "secret" | "password" | "master_key"),
                        "{shown}: {key} holds a secret; use token_file or token_env"
                    );
                    if let Some(inner) = value.as_table() {
                        no_token_keys(inner, shown);
                    }
                }
            }
            no_token_keys(&value, &shown.to_string());
        }
    }

    // The example Secrets hold placeholders only, and no base64 `data`.
    for doc in example_secrets().iter().filter(|d| d.kind() == "Secret") {
        assert!(
            at(&doc.value, "data").is_none(),
            "{}: use stringData placeholders, not data",
            doc.file
        );
        for (key, value) in at(&doc.value, "stringData")
            .and_then(Value::as_mapping)
            .expect("stringData")
        {
            let value = value.as_str().unwrap_or("");
            assert!(
                value.contains(PLACEHOLDER),
                "{}: {key:?} must be a {PLACEHOLDER}... placeholder",
                doc.file
            );
        }
    }
}

/// The tokens written literally after `Bearer ` (16 or more token characters); a variable
/// (`$TOKEN`, `$(cat …)`) or a placeholder is not one.
fn literal_bearer_tokens(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    lower
        .match_indices("bearer ")
        .filter_map(|(at, _)| {
            let word: String = text[at + 7..]
                .chars()
                .take_while(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '=')
                })
                .collect();
            (word.len() >= 16 && !word.starts_with(PLACEHOLDER)).then_some(word)
        })
        .collect()
}

#[test]
fn the_secret_detectors_detect() {
    assert_eq!(
        literal_bearer_tokens("curl -H \"Authorization: Bearer 0123456789abcdef0123\""),
        ["0123456789abcdef0123"]
    );
    assert!(literal_bearer_tokens("-H \"Authorization: Bearer $TOKEN\" x").is_empty());
    assert!(literal_bearer_tokens("Bearer $(cat /etc/asana-worker/admin.token)").is_empty());
    assert!(literal_bearer_tokens("`WWW-Authenticate: Bearer`; a bearer caller").is_empty());
    assert!(has_asana_pat(
        "x 1/1203456789012345:0123456789abcdef0123456789abcdef y"
    ));
    assert!(has_asana_pat(
        "t = \"2/1203456789012345/1209876543210987:0123456789abcdef0123456789abcdef\""
    ));
    assert!(!has_asana_pat(
        "schedule = \"*/15 * * * *\" at 10:52 on 2026/11/26"
    ));
    assert!(!has_asana_pat("1/12:0123456789abcdef0123456789abcdef"));
    assert_eq!(url_passwords("postgres://u:hunter2@db/x"), ["hunter2"]);
    assert!(url_passwords("postgres://u:REPLACE_WITH_PASSWORD@db/x").is_empty());
    assert!(url_passwords("postgres://u@db/x https://app.asana.com/api/1.0").is_empty());
    assert!(url_passwords("rust:1=docker-image://rust:1.95.0-trixie@sha256:0a1b").is_empty());
    assert_eq!(url_passwords("https://u:pw@h docker-image://a:b@c"), ["pw"]);
}
