//! The status page in a real headless browser (Debian's Chromium, driven over WebDriver by
//! chromedriver, both installed by `scripts/chromium`), against a daemon running the example
//! jobs on the simulator: each job shows its last outcome, the token chart has data, the page
//! refreshes itself, a run started from the page with the admin token runs, the same action
//! without the token is refused and changes nothing, markup is shown as text, and no page holds
//! a secret. Saves the screenshot docs/operations.md shows (docs/images/status-page.png).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asana_worker::store::RunFilter;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::status::{ADMIN_TOKEN, SCRIPT_NAME, StatusDaemon, dead_run_with_markup};

/// A chromedriver process on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(path: &std::path::Path) -> Driver {
        let port = support::daemon::free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("http://127.0.0.1:{port}/status"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // Tests run as root in a container: Chromium's sandbox needs namespaces
                    // they may not have.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1500,1900",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

/// Waits (at most `secs`) until `check` holds on the current page.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn text_of(browser: &Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn attr_of(browser: &Client, css: &str, name: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_in_a_browser() {
    let Some(chromedriver) = support::tools::chromedriver() else {
        return;
    };
    let setup = StatusDaemon::start(true).await;
    let expected = setup.run_examples().await;
    let markup_run = dead_run_with_markup(&setup).await;
    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser().await;
    let base = setup.base.clone();

    // Each job's row shows its last outcome.
    browser.goto(&format!("{base}/status")).await.unwrap();
    for (job, state) in &expected {
        let css = format!("tr[data-job=\"{job}\"] td.last");
        assert_eq!(
            attr_of(&browser, &css, "data-state").await.as_deref(),
            Some(*state),
            "{job}"
        );
        let text = text_of(&browser, &css).await.unwrap();
        assert!(text.starts_with(state), "{job}: {text:?}");
    }
    // The service account's chart has data: the windows of the last hour, a bar in those
    // with requests.
    let chart = "tr[data-token=\"service-account\"] svg.chart";
    assert_eq!(
        attr_of(&browser, chart, "data-windows").await.as_deref(),
        Some("60")
    );
    let peak: f64 = attr_of(&browser, chart, "data-peak")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak > 0.0, "the chart's busiest window has {peak} requests");
    let bars = browser
        .find_all(Locator::Css(&format!("{chart} rect.rate")))
        .await
        .unwrap();
    assert!(!bars.is_empty(), "no bar in the chart");
    let height: f64 = bars[bars.len() - 1]
        .attr("height")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(height > 0.0);

    // Not logged in: no action buttons, and the action is refused from the browser too.
    assert!(
        browser
            .find_all(Locator::Css("button.run-now"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(browser.find(Locator::Id("login-link")).await.is_ok());
    let store = setup.daemon.store().await;
    let before = store.list_runs(&RunFilter::default()).await.unwrap().len();
    let status = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/status/jobs/check-service-account/run', {method: 'POST'}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    assert_eq!(
        store.list_runs(&RunFilter::default()).await.unwrap().len(),
        before,
        "a refused action enqueues nothing"
    );

    // Markup in a job name and an error is shown as text, and runs nothing.
    browser
        .goto(&format!("{base}/status/runs/{markup_run}"))
        .await
        .unwrap();
    let title = text_of(&browser, "h2").await.unwrap();
    assert!(title.contains(SCRIPT_NAME), "{title:?}");
    let error = text_of(&browser, "#run-error").await.unwrap();
    assert!(error.contains("<img src=x onerror=alert(1)>"), "{error:?}");
    assert!(
        browser.get_alert_text().await.is_err(),
        "no script of the page's data ran"
    );
    let injected = browser
        .execute(
            "return document.querySelectorAll('main script, main img').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0));

    // Logged in: "Run now" enqueues a run, whose page refreshes itself until it completes.
    browser.goto(&format!("{base}/status/login")).await.unwrap();
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(10, "the front page after logging in", || async {
        browser
            .find(Locator::Css(
                "tr[data-job=\"check-service-account\"] button.run-now",
            ))
            .await
            .is_ok()
    })
    .await;
    browser
        .find(Locator::Css(
            "tr[data-job=\"check-service-account\"] button.run-now",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(10, "the new run's page", || async {
        browser
            .current_url()
            .await
            .is_ok_and(|url| url.path().starts_with("/status/runs/"))
    })
    .await;
    let url = browser.current_url().await.unwrap();
    let run_id = url.path()["/status/runs/".len()..].to_string();
    eventually(
        40,
        "the run to complete on its page (live refresh)",
        || async { text_of(&browser, "#run-state").await.as_deref() == Some("completed") },
    )
    .await;
    let run = store
        .get_run(uuid::Uuid::parse_str(&run_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.job_name, "check-service-account");
    assert_eq!(run.trigger.as_str(), "manual");
    setup.assert_no_secret("the run page", &browser.source().await.unwrap());

    // The front page, logged in, for the docs.
    browser.goto(&format!("{base}/status")).await.unwrap();
    eventually(10, "the front page", || async {
        browser
            .find(Locator::Css("section#compliance"))
            .await
            .is_ok()
    })
    .await;
    setup.assert_no_secret("the front page", &browser.source().await.unwrap());
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/status-page.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();

    browser.close().await.unwrap();
    drop(driver);
    setup.stop().await;
}
