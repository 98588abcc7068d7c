//! moto's S3 server (`moto[server]`, pinned in `scripts/python-venv`) on a free loopback port,
//! started with the project venv's Python for tests of the `s3` sink.
//!
//! The interpreter is `$ASANA_WORKER_TEST_PYTHON`, else `.venv/bin/python`; when neither can
//! import moto, `scripts/python-venv` is run once, and if that fails [`Moto::start`] prints
//! SKIPPED with the command to run and returns None.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn has_module(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An interpreter of the project's venv that can import `module` (`moto.server`, `aiosmtpd`),
/// creating the venv if needed.
pub fn python_with(module: &str) -> Result<PathBuf, String> {
    if let Ok(explicit) = std::env::var("ASANA_WORKER_TEST_PYTHON") {
        let path = PathBuf::from(explicit);
        if has_module(&path, module) {
            return Ok(path);
        }
    }
    let venv = root().join(".venv/bin/python");
    if has_module(&venv, module) {
        return Ok(venv);
    }
    let setup = Command::new(root().join("scripts/python-venv"))
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run scripts/python-venv: {e}"))?;
    if !setup.status.success() {
        return Err(format!(
            "scripts/python-venv failed ({}): {}",
            setup.status,
            String::from_utf8_lossy(&setup.stderr).trim()
        ));
    }
    if has_module(&venv, module) {
        Ok(venv)
    } else {
        Err(format!("{} cannot import {module}", venv.display()))
    }
}

/// moto's S3 server on a loopback port, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts the server, or returns None after printing why the test is skipped.
    pub async fn start(test: &str) -> Option<Moto> {
        let python = match python_with("moto.server") {
            Ok(python) => python,
            Err(why) => {
                eprintln!(
                    "SKIPPED {test}: no Python with moto ({why}); create it with `scripts/python-venv`"
                );
                return None;
            }
        };
        // A free port: bind, read it, release it for the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                .is_ok()
            {
                return Some(moto);
            }
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub async fn bucket(&self, name: &str) {
        let status = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "create bucket: {status}");
    }

    /// An object's bytes, read with the test credentials (moto refuses anonymous reads of some
    /// objects), or None when there is none.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("an S3 client for moto");
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(result) => Some(result.bytes().await.expect("object bytes").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => panic!("reading s3://{bucket}/{key} from moto: {error}"),
        }
    }

    /// moto's test credentials (it accepts any).
    pub fn credentials(&self) -> asana_worker::sinks::s3::S3Credentials {
        asana_worker::sinks::s3::S3Credentials {
            access_key_id: secrecy::SecretString::from("testing".to_string()),
            secret_access_key: secrecy::SecretString::from("testing-secret".to_string()),
        }
    }
}
