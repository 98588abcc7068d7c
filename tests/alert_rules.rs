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
