//! `creds` end to end with the real binary: a canary token added on standard input never shows
//! in argv, the database file or its WAL, `creds list --json`, or trace-level daemon logs; a job
//! naming the stored credential validates and runs against the simulator; the daemon refuses to
//! start without a key or with a wrong one; `rotate-key` re-encrypts every row.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use asana_worker::config::settings::Settings;
use asana_worker::credentials::{self, CredentialError, crypto::CryptoError};
use asana_worker::sim::SimServer;
use asana_worker::sim::config::SimConfig;
use asana_worker::store;

struct Setup {
    dir: tempfile::TempDir,
    sim: SimServer,
    canary: String,
    admin_port: u16,
    /// How many `creds add` processes had their argv inspected.
    argv_seen: std::cell::Cell<u32>,
}

impl Setup {
    async fn new() -> Setup {
        let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
        let mut config = SimConfig::default();
        config.timing.activity_per_minute = 0.0;
        config.timing.audit_events_per_minute = 0.0;
        let mut tokens = SimConfig::default_tokens();
        tokens[0].secret = Some(canary.clone());
        config.tokens = tokens;
        let sim = SimServer::start(config).await.unwrap();
        assert_eq!(
            sim.token("service-account").as_deref(),
            Some(canary.as_str())
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/check.toml"),
            "name = \"check\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"stored-sa\"\nmax_attempts = 1\ntimeout = \"1m\"\n",
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_port = listener.local_addr().unwrap().port();
        drop(listener);
        let setup = Setup {
            dir,
            sim,
            canary,
            admin_port,
            argv_seen: std::cell::Cell::new(0),
        };
        setup.write_config(Some(&setup.path("master.key")));
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, key: Option<&Path>) {
        let key_line = key
            .map(|k| {
                format!(
                    "[credentials_store]\nmaster_key_file = \"{}\"\n",
                    k.display()
                )
            })
            .unwrap_or_default();
        let config = format!(
            "[database]\nurl = \"sqlite://{db}\"\n[jobs]\ndir = \"{jobs}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\
             [worker]\nlease_secs = 4\nheartbeat_secs = 1\npoll_interval_ms = 100\n[scheduler]\ntick_ms = 200\n\
             [asana]\nbase_url = \"{base}\"\n{key_line}",
            db = self.path("state.sqlite").display(),
            jobs = self.path("jobs").display(),
            port = self.admin_port,
            base = self.sim.base_url(),
        );
        std::fs::write(self.path("config.toml"), config).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        support::daemon::cli_command(&self.path("config.toml"), args)
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `creds add` with the token on standard input; checks the running process's argv.
    fn add(&self, name: &str, token: &str) -> Output {
        let mut child = self
            .command(&[
                "creds",
                "add",
                name,
                "--kind",
                "service_account",
                "--tier",
                "paid",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the exec, then read the argv every user can see.
        let deadline = Instant::now() + Duration::from_secs(5);
        let cmdline = loop {
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
            if contains(&cmdline, "creds") || Instant::now() > deadline {
                break cmdline;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A process that failed before reading its input may be gone already.
        if contains(&cmdline, name) {
            self.argv_seen.set(self.argv_seen.get() + 1);
            assert!(
                token.is_empty() || !contains(&cmdline, token),
                "the token is in argv"
            );
        }
        // A process that fails before reading its input (the cases that expect a refusal)
        // closes the pipe first: a broken pipe here is part of the outcome, not a test error.
        if let Err(error) = child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{token}\n").as_bytes())
        {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        }
        child.wait_with_output().unwrap()
    }

    async fn settings(&self) -> Settings {
        Settings::load(Some(&self.path("config.toml"))).unwrap()
    }
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
            panic!("the daemon did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_canary_token_runs_its_job_and_never_leaks() {
    let setup = Setup::new().await;
    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("master.key").to_str().unwrap(),
    ]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup.path("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An existing key file is never overwritten.
    assert!(
        !setup
            .cli(&[
                "creds",
                "init-key",
                setup.path("master.key").to_str().unwrap()
            ])
            .status
            .success()
    );
    // There is no --token option, and empty input is refused.
    assert_eq!(
        setup
            .cli(&["creds", "add", "x", "--kind", "pat", "--token", "abc"])
            .status
            .code(),
        Some(2)
    );
    let empty = setup.add("empty", "");
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty"));

    let seen = setup.argv_seen.get();
    let added = ok(&setup.add("stored-sa", &setup.canary));
    assert!(added.contains("stored-sa"), "{added}");
    assert_eq!(
        setup.argv_seen.get(),
        seen + 1,
        "the argv of creds add was not inspected"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup.path("state.sqlite"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let listed = ok(&setup.cli(&["creds", "list", "--json"]));
    assert!(!listed.contains(&setup.canary));
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows[0]["name"], "stored-sa");
    assert_eq!(rows[0]["kind"], "service_account");
    assert_eq!(rows[0]["state"], "active");
    let table = ok(&setup.cli(&["creds", "list"]));
    assert!(table.contains("stored-sa") && !table.contains(&setup.canary));

    // A job naming the stored credential validates.
    let validated = ok(&setup.cli(&["validate"]));
    assert!(validated.contains("1 job(s)"), "{validated}");

    // The daemon decrypts it and the job runs against the simulator, logging at trace level.
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
    let waited = setup.cli(&["jobs", "run", "check", "--wait", "--timeout-secs", "30"]);
    let waited_out = ok(&waited);
    assert!(waited_out.contains("completed"), "{waited_out}");
    assert!(!waited_out.contains(&setup.canary));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", setup.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains(&setup.canary));
    unsafe_signal(&daemon);
    assert!(wait_exit(&mut daemon, Duration::from_secs(15)).success());
    let logs = std::fs::read_to_string(setup.path("daemon.log")).unwrap();
    assert!(logs.contains("Loaded stored credentials"), "{logs}");
    assert!(
        !logs.contains(&setup.canary),
        "the token leaked into the logs"
    );

    // Neither the database file nor its WAL holds the token.
    for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
        if let Ok(bytes) = std::fs::read(setup.path(name)) {
            assert!(!contains(&bytes, &setup.canary), "the token is in {name}");
        }
    }
    let store = store::open(&format!(
        "sqlite://{}",
        setup.path("state.sqlite").display()
    ))
    .await
    .unwrap();
    let row = store.get_credential("stored-sa").await.unwrap().unwrap();
    assert!(!contains(&row.ciphertext, &setup.canary));
}

fn unsafe_signal(child: &Child) {
    // SIGTERM: drain and exit.
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_to_start_without_a_key_or_with_a_wrong_one() {
    let setup = Setup::new().await;
    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("master.key").to_str().unwrap(),
    ]));
    ok(&setup.add("stored-sa", &setup.canary));

    setup.write_config(None);
    let run = setup.cli(&["run"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("master_key_file"), "{stderr}");
    assert!(!stderr.contains(&setup.canary));
    // `creds add` needs the key too.
    assert!(!setup.add("other", "tok").status.success());

    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("wrong.key").to_str().unwrap(),
    ]));
    setup.write_config(Some(&setup.path("wrong.key")));
    let run = setup.cli(&["run"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("stored-sa") && stderr.contains("different key"),
        "{stderr}"
    );
    assert!(!stderr.contains(&setup.canary));
    let error = credentials::load_stored(
        &*store::open(&format!(
            "sqlite://{}",
            setup.path("state.sqlite").display()
        ))
        .await
        .unwrap(),
        &setup.settings().await,
    )
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        CredentialError::Crypto(CryptoError::Decrypt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_reencrypts_every_row_and_the_old_key_stops_working() {
    let setup = Setup::new().await;
    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("master.key").to_str().unwrap(),
    ]));
    let tokens: Vec<String> = (0..5).map(|i| format!("{}-{i}", setup.canary)).collect();
    for (i, token) in tokens.iter().enumerate() {
        ok(&setup.add(&format!("cred-{i}"), token));
    }
    let db = format!("sqlite://{}", setup.path("state.sqlite").display());
    let store = store::open(&db).await.unwrap();
    let before = store.list_credentials().await.unwrap();
    assert!(before.iter().all(|row| row.key_version == 1));

    // A new key must have a higher version.
    ok(&setup.cli(&[
        "creds",
        "init-key",
        setup.path("same.key").to_str().unwrap(),
    ]));
    let stale = setup.cli(&[
        "creds",
        "rotate-key",
        "--new-key-file",
        setup.path("same.key").to_str().unwrap(),
    ]);
    assert!(!stale.status.success());
    let new_key = setup.path("new.key");
    ok(&setup.cli(&[
        "creds",
        "init-key",
        new_key.to_str().unwrap(),
        "--version",
        "2",
    ]));
    let stale = setup.cli(&[
        "creds",
        "rotate-key",
        "--new-key-file",
        setup.path("same.key").to_str().unwrap(),
    ]);
    assert!(!stale.status.success());
    let rotated = ok(&setup.cli(&[
        "creds",
        "rotate-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
        "--batch-size",
        "2",
    ]));
    assert!(rotated.contains("Re-encrypted 5"), "{rotated}");
    let after = store.list_credentials().await.unwrap();
    assert_eq!(after.len(), 5);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.id, new.id);
        assert_eq!(new.key_version, 2);
        assert_ne!(old.ciphertext, new.ciphertext);
        assert_ne!(old.nonce, new.nonce);
    }

    // With only the new key, every token decrypts.
    setup.write_config(Some(&new_key));
    let stored = credentials::load_stored(&*store, &setup.settings().await)
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = stored
        .iter()
        .map(|c| {
            use secrecy::ExposeSecret;
            (c.name.clone(), c.token().expose_secret().to_string())
        })
        .collect();
    got.sort();
    let expected: Vec<(String, String)> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("cred-{i}"), t.clone()))
        .collect();
    assert_eq!(got, expected);

    // With only the old key, nothing does.
    setup.write_config(Some(&setup.path("master.key")));
    let error = credentials::load_stored(&*store, &setup.settings().await)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        CredentialError::Crypto(CryptoError::UnknownVersion { version: 2, .. })
    ));
    assert!(error.to_string().contains("version 2"), "{error}");
}
