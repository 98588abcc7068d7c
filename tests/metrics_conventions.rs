//! `/metrics` follows Prometheus's conventions, checked by `promtool check metrics` (from
//! Debian's `prometheus` package, unpacked by `scripts/promtool`): one prefix, HELP on every
//! family, build info, process and database metrics, and the counters alerts watch present at
//! zero for every job and credential before anything has happened.

mod support;
use support::tools::promtool;

use std::io::Write;
use std::process::{Command, Stdio};

use asana_worker::sim::SimServer;
use support::daemon::{Daemon, DaemonOptions, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_alerting_series_exist_at_zero() {
    let sim = SimServer::start(support::sim::quiet_config())
        .await
        .unwrap();
    let daemon = Daemon::new(&sim, DaemonOptions::default());
    daemon.write_check_job("check", "");
    let mut child = daemon.start("metrics");
    daemon.wait_ready(&mut child).await;
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", daemon.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    terminate(&mut child);

    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() > 10, "{text}");
    for family in &families {
        assert!(family.starts_with("asana_worker_"), "one prefix: {family}");
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "HELP for {family}"
        );
    }
    let sample = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(sample("asana_worker_build_info{"), Some(1.0));
    assert!(sample("asana_worker_database_size_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample("asana_worker_process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample("asana_worker_process_open_fds").unwrap_or(0.0) > 0.0);
    for zero in [
        "asana_worker_config_reload_failures_total ",
        "asana_worker_lease_rescues_total ",
        "asana_worker_scheduler_errors_total ",
    ] {
        assert_eq!(sample(zero), Some(0.0), "{zero}at zero");
    }
    let line = |name: &str, labels: &[&str]| {
        text.lines().any(|l| {
            l.starts_with(name) && labels.iter().all(|label| l.contains(label)) && l.ends_with(" 0")
        })
    };
    assert!(line(
        "asana_worker_runs_total{",
        &["job=\"check\"", "outcome=\"failed\""]
    ));
    for cause in ["quota", "search", "job_cap"] {
        assert!(
            line(
                "asana_worker_rate_limited_total{",
                &["token=\"sa\"", &format!("cause=\"{cause}\"")]
            ),
            "rate_limited_total for cause {cause} at zero"
        );
    }
}
