//! `creds authorize`, `check`, `revoke` and `list` end to end with the real binary against the
//! simulator. The browser step is an HTTP client fetching the printed authorize URL and following
//! the redirect to the callback. Canary client secret, PAT, refresh and access tokens never show
//! in argv, trace-level logs of the CLI or the daemon, errors, metrics, `creds list`, or the bytes
//! of the SQLite database and its WAL.

mod support;
use support::sim::SimAdmin;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use asana_worker::sim::SimServer;
use asana_worker::sim::config::{OAuthClientSpec, SimConfig};

struct Setup {
    dir: tempfile::TempDir,
    sim: SimServer,
    client_secret: String,
    pat: String,
    admin_port: u16,
}

impl Setup {
    async fn new() -> Setup {
        let client_secret = format!("canary-secret-{}", uuid::Uuid::new_v4().simple());
        let pat = format!("canary-pat-{}", uuid::Uuid::new_v4().simple());
        let mut config = SimConfig::default();
        config.timing.activity_per_minute = 0.0;
        config.timing.audit_events_per_minute = 0.0;
        config.oauth_clients = vec![OAuthClientSpec {
            client_id: "canary-app".into(),
            client_secret: client_secret.clone(),
            ..OAuthClientSpec::default()
        }];
        let mut tokens = SimConfig::default_tokens();
        tokens[1].secret = Some(pat.clone());
        config.tokens = tokens;
        let sim = SimServer::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/check.toml"),
            "name = \"check-ora\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"ora\"\nmax_attempts = 1\ntimeout = \"1m\"\n",
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_port = listener.local_addr().unwrap().port();
        drop(listener);
        let setup = Setup {
            dir,
            sim,
            client_secret,
            pat,
            admin_port,
        };
        let config = format!(
            "[database]\nurl = \"sqlite://{db}\"\n[jobs]\ndir = \"{jobs}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\
             [worker]\nlease_secs = 4\nheartbeat_secs = 1\npoll_interval_ms = 100\n[scheduler]\ntick_ms = 200\n\
             [asana]\nbase_url = \"{base}\"\n\
             [credentials_store]\nmaster_key_file = \"{key}\"\npat_max_age_days = 0\nunused_warning_days = 30\n\
             [oauth]\nrefresh_margin_secs = 7200\n",
            db = setup.path("state.sqlite").display(),
            jobs = setup.path("jobs").display(),
            port = setup.admin_port,
            base = setup.sim.base_url(),
            key = setup.path("master.key").display(),
        );
        std::fs::write(setup.path("config.toml"), config).unwrap();
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = support::daemon::cli_command(&self.path("config.toml"), args);
        command.env("ASANA_WORKER_LOG", "trace");
        command
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Every secret the test must never see again.
    async fn secrets(&self) -> Vec<String> {
        let mut out = vec![self.client_secret.clone(), self.pat.clone()];
        let admin = SimAdmin::of(&self.sim);
        let grants = admin.get("oauth/grants").await;
        for grant in grants["grants"].as_array().unwrap() {
            out.push(grant["refresh_token"].as_str().unwrap().to_string());
        }
        let tokens = admin.get("tokens").await;
        for token in tokens["tokens"].as_array().unwrap() {
            if token["name"] == "oauth:canary-app" {
                out.push(token["token"].as_str().unwrap().to_string());
            }
        }
        out
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_check_list_and_revoke_end_to_end_without_leaking_a_secret() {
    let setup = Setup::new().await;
    let mut transcript = String::new();
    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("master.key").to_str().unwrap(),
    ]));
    std::fs::write(
        setup.path("client.secret"),
        format!("{}\n", setup.client_secret),
    )
    .unwrap();

    // The client secret may not be given on the command line at all.
    let refused = setup.cli(&[
        "creds",
        "authorize",
        "ora",
        "--client-id",
        "canary-app",
        "--client-secret",
        "x",
    ]);
    assert_eq!(refused.status.code(), Some(2));

    // authorize: read the URL it prints, play the browser, follow the redirect to the callback.
    let stderr_file = std::fs::File::create(setup.path("authorize.log")).unwrap();
    let mut child = setup
        .command(&[
            "creds",
            "authorize",
            "ora",
            "--client-id",
            "canary-app",
            "--client-secret-file",
            setup.path("client.secret").to_str().unwrap(),
            "--tenant",
            "team-a",
        ])
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    // Wait for the exec, then read the argv every user can see.
    let deadline = Instant::now() + Duration::from_secs(5);
    let cmdline = loop {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
        if contains(&cmdline, "authorize") || Instant::now() > deadline {
            break cmdline;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(contains(&cmdline, "authorize"), "argv was not read");
    assert!(
        !contains(&cmdline, &setup.client_secret),
        "the secret is in argv"
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let url = {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "no URL printed");
            transcript.push_str(&line);
            if line.trim_start().starts_with("http") {
                break line.trim().to_string();
            }
        }
    };
    assert!(
        url.starts_with(&format!("{}/-/oauth_authorize?", setup.sim.origin())),
        "{url}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let consent = browser.get(&url).send().await.unwrap();
    assert_eq!(consent.status().as_u16(), 302);
    let callback = consent.headers()["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    let landed = browser.get(&callback).send().await.unwrap();
    assert!(landed.status().is_success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    transcript.push_str(&rest);
    assert!(rest.contains("Stored OAuth credential ora"), "{transcript}");
    transcript.push_str(&std::fs::read_to_string(setup.path("authorize.log")).unwrap());

    // A PAT next to it, its token on standard input.
    let mut add = setup
        .command(&["creds", "add", "pat1", "--kind", "pat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", setup.pat).as_bytes())
        .unwrap();
    let added = add.wait_with_output().unwrap();
    transcript.push_str(&ok(&added));
    transcript.push_str(&String::from_utf8_lossy(&added.stderr));

    let listed = ok(&setup.cli(&["creds", "list", "--json"]));
    transcript.push_str(&listed);
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ora = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ora")
        .unwrap();
    assert_eq!(ora["kind"], "oauth");
    assert_eq!(ora["state"], "active");
    assert_eq!(ora["tenant"], "team-a");
    assert!(ora["owner"]["email"].is_string(), "{ora}");
    assert!(ora["last_validated_at"].is_string(), "{ora}");
    let owner_gid = ora["owner"]["gid"].as_str().unwrap().to_string();
    let pat1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pat1")
        .unwrap();
    assert!(
        pat1["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["reason"] == "pat_age"),
        "{pat1}"
    );
    assert!(ora["warnings"].as_array().unwrap().is_empty(), "{ora}");

    let checked = setup.cli(&["creds", "check", "ora"]);
    let out = ok(&checked);
    assert!(
        out.contains("is valid") && out.contains(&owner_gid),
        "{out}"
    );
    transcript.push_str(&out);
    transcript.push_str(&String::from_utf8_lossy(&checked.stderr));

    // The daemon refreshes the token (margin above its lifetime) and runs the job, at trace level.
    let log = std::fs::File::create(setup.path("daemon.log")).unwrap();
    let mut daemon = setup
        .command(&["run"])
        .env("ASANA_WORKER__LOG__LEVEL", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{}/readyz", setup.admin_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!(
                "the daemon exited with {status}: {}",
                std::fs::read_to_string(setup.path("daemon.log")).unwrap()
            );
        }
        if let Ok(response) = reqwest::get(&ready).await
            && response.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = setup.cli(&["jobs", "run", "check-ora", "--wait", "--timeout-secs", "30"]);
    transcript.push_str(&ok(&waited));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", setup.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("asana_worker_oauth_refreshes_total"),
        "{metrics}"
    );
    transcript.push_str(&metrics);
    sigterm(&daemon);
    assert!(wait_exit(&mut daemon, Duration::from_secs(15)).success());
    let daemon_log = std::fs::read_to_string(setup.path("daemon.log")).unwrap();
    assert!(
        daemon_log.contains("Refreshed the OAuth access token"),
        "{daemon_log}"
    );
    transcript.push_str(&daemon_log);

    // The owner is deactivated: the check fails with a clear message and exit code 3.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/_sim/users/{owner_gid}/deactivate",
            setup.sim.origin()
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let rejected = setup.cli(&["creds", "check", "ora"]);
    assert_eq!(rejected.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&rejected.stderr).into_owned();
    assert!(
        stderr.contains("rejected credential \"ora\"")
            && stderr.contains("creds authorize ora --replace"),
        "{stderr}"
    );
    // Logged at error level, naming the credential and what to run next.
    assert!(
        stderr.lines().any(|l| l.contains("ERROR")
            && l.contains("Credential rejected")
            && l.contains("ora")
            && l.contains("creds authorize ora --replace")),
        "{stderr}"
    );
    transcript.push_str(&stderr);
    let listed = ok(&setup.cli(&["creds", "list"]));
    assert!(
        listed.contains("revoked") && listed.contains("warning [rejected]"),
        "{listed}"
    );
    transcript.push_str(&listed);

    // Every secret seen so far is absent from everything printed, logged or stored.
    let secrets = setup.secrets().await;
    assert!(secrets.len() >= 4, "{}", secrets.len());
    for secret in &secrets {
        assert!(
            !transcript.contains(secret.as_str()),
            "a secret leaked into output or logs"
        );
        for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
            if let Ok(bytes) = std::fs::read(setup.path(name)) {
                assert!(!contains(&bytes, secret), "a secret is in {name} in clear");
            }
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["state.sqlite", "master.key"] {
            let mode = std::fs::metadata(setup.path(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    // revoke: the OAuth grant is revoked at Asana, then the row deleted; a PAT only deleted.
    let revoked = ok(&setup.cli(&["creds", "revoke", "ora"]));
    assert!(revoked.contains("Revoked the OAuth grant"), "{revoked}");
    let grants: serde_json::Value =
        reqwest::get(format!("{}/_sim/oauth/grants", setup.sim.origin()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["revoked"] == true),
        "{grants}"
    );
    let deleted = ok(&setup.cli(&["creds", "revoke", "pat1"]));
    assert!(deleted.contains("developer console"), "{deleted}");
    let listed = ok(&setup.cli(&["creds", "list", "--json"]));
    assert_eq!(listed.trim(), "[]");
    assert_eq!(setup.cli(&["creds", "check", "ora"]).status.code(), Some(2));
}
