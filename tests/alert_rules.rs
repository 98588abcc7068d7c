//! The alerting rules in deploy/prometheus: `promtool check rules` accepts them, `promtool test
//! rules` runs them against recorded series (alerts.test.yaml: each fires on the first event and
//! stays quiet otherwise), and every alert names a runbook that exists in docs/operations.md.

mod support;
use support::tools::promtool;

use std::path::Path;
use std::process::Command;

fn prometheus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

fn run(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_are_valid_and_pass_their_unit_tests() {
    run(&["check", "rules", "alerts.yaml"]);
    run(&["test", "rules", "alerts.test.yaml"]);
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_names_a_runbook_that_exists() {
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yaml")).unwrap();
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let anchors: Vec<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(anchor)
        .collect();
    let runbooks: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: \"docs/operations.md#"))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    let alerts = rules.matches("- alert:").count();
    assert_eq!(runbooks.len(), alerts, "one runbook per alert");
    for runbook in runbooks {
        assert!(
            anchors.iter().any(|a| a == runbook),
            "docs/operations.md has no heading for #{runbook}"
        );
    }
}

/// Every metric name (`asana_worker_…`) in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("asana_worker_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The Grafana dashboard (deploy/grafana/asana-worker.json): it has the panels operators look
/// for, docs/operations.md lists each, every query is valid PromQL (promtool checks them as
/// recording rules, with Grafana's variables filled in), and every metric it reads is one the
/// daemon exports (src/telemetry/catalog.rs describes them all).
#[test]
fn the_dashboard_reads_exported_metrics_with_valid_queries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/asana-worker.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let catalog = std::fs::read_to_string(root.join("src/telemetry/catalog.rs")).unwrap();
    let exported = metric_names(&catalog);
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<String> = panels
        .iter()
        .filter_map(|p| p["title"].as_str())
        .map(str::to_lowercase)
        .collect();
    for wanted in [
        "jobs",
        "runs by outcome",
        "budget utilization per token",
        "audit-log lag",
        "export progress",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
    // docs/operations.md shows the dashboard: a table row for every panel.
    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            operations.contains(&format!("\n| {title} |")),
            "docs/operations.md's dashboard table has no row for panel {title:?}"
        );
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            for name in metric_names(expr) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| exported.iter().any(|e| e == base))
                    .unwrap_or(&name);
                assert!(
                    exported.iter().any(|e| e == family),
                    "panel {:?} reads {name}, which the daemon does not export",
                    panel["title"]
                );
            }
            let filled = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*");
            queries += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query_{queries}\n        expr: {}\n",
                serde_json::to_string(&filled).unwrap()
            ));
        }
    }
    assert!(queries >= 10, "{queries} queries");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
