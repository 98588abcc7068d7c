//! External tools the tests run, provided by the project's own scripts.

use std::process::Command;

/// The promtool that `scripts/promtool` provides (unpacking Debian's package into
/// `target/tools` when none is installed).
pub fn promtool() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/promtool");
    let out = Command::new(script)
        .output()
        .expect("scripts/promtool runs");
    assert!(
        out.status.success(),
        "scripts/promtool could not provide promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A tool that `scripts/deploy-tools` installs into `.venv-deploy` (`kubectl`,
/// `kubernetes-validate`, `checkov`, `hadolint`), or None with a note that the test is skipped
/// because the script could not provide it. Under CI (`CI` set, as `.ci/run` does) a missing
/// tool fails the test instead: CI must never pass by skipping.
pub fn deploy_tool(name: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/deploy-tools"))
        .output()
        .expect("scripts/deploy-tools runs");
    let path = root.join(".venv-deploy/bin").join(name);
    if out.status.success() && path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{name} is not available: scripts/deploy-tools said: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// The chromedriver of Debian's `chromium-driver`, which `scripts/chromium` installs with
/// `chromium` when missing, or None with a note that the test is skipped (a failure under CI).
pub fn chromedriver() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/chromium"))
        .output()
        .expect("scripts/chromium runs");
    let driver = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success()
        && driver.is_file()
        && std::path::Path::new("/usr/bin/chromium").is_file()
    {
        return Some(driver);
    }
    let why = format!(
        "chromium or chromedriver is not available: scripts/chromium said: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}
