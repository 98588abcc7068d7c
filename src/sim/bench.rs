//! Throughput benchmark of the simulator itself (`asana-worker bench sim`): the simulator runs on a
//! single-threaded runtime (one core), a load generator on another thread keeps a fixed number of
//! keep-alive connections busy with simple GETs. It shows the simulator is never the bottleneck
//! of a benchmark of the worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::SimServer;
use super::config::{LimitSpec, SimConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ThroughputOptions {
    /// How long to generate load.
    pub duration: Duration,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Path under `/api/1.0` to request.
    pub path: String,
}

impl Default for ThroughputOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            connections: 32,
            path: "/users/me".into(),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct ThroughputReport {
    /// Successful responses.
    pub ok: u64,
    /// Responses other than 200.
    pub failed: u64,
    /// Wall time of the load phase.
    pub elapsed: Duration,
    /// CPU time the simulator's thread used during the load phase.
    pub sim_cpu: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl ThroughputReport {
    /// Successful requests per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Share of one core the simulator used.
    pub fn sim_core_share(&self) -> f64 {
        self.sim_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The simulator did not start.
    #[error("simulator did not start: {0}")]
    Start(String),
    /// The load generator failed.
    #[error("load generator failed: {0}")]
    Load(String),
}

/// CPU time of the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}

/// Runs the benchmark.
pub fn throughput(options: &ThroughputOptions) -> Result<ThroughputReport, BenchError> {
    let config = SimConfig {
        limits: LimitSpec {
            free_per_minute: u32::MAX / 2,
            paid_per_minute: u32::MAX / 2,
            search_per_minute: u32::MAX / 2,
            concurrent_reads: 100_000,
            concurrent_writes: 100_000,
            concurrent_jobs: 100,
        },
        ..SimConfig::default()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    let sim_thread = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready_tx.send(Err(error.to_string()));
                return;
            }
        };
        runtime.block_on(async move {
            let mut config = config;
            config.timing.audit_events_per_minute = 0.0;
            config.timing.activity_per_minute = 0.0;
            match SimServer::start(config).await {
                Ok(server) => {
                    let token = server.token("pat-paid").unwrap_or_default();
                    let _ = ready_tx.send(Ok((server.base_url(), token)));
                    let cpu_start = thread_cpu_time();
                    let _ = stop_rx.await;
                    let _ = cpu_tx.send(thread_cpu_time() - cpu_start);
                    server.shutdown().await;
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                }
            }
        });
    });
    let (base_url, token) = ready_rx
        .recv()
        .map_err(|e| BenchError::Start(e.to_string()))?
        .map_err(BenchError::Start)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Load(e.to_string()))?;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{base_url}{}", options.path);
    let started = Instant::now();
    let latencies = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.connections)
            .build()
            .map_err(|e| BenchError::Load(e.to_string()))?;
        let mut workers = Vec::new();
        for _ in 0..options.connections {
            let client = client.clone();
            let url = url.clone();
            let token = token.clone();
            let ok = ok.clone();
            let failed = failed.clone();
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result = client.get(&url).bearer_auth(&token).send().await;
                    match result {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            }));
        }
        tokio::time::sleep(options.duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.map_err(|e| BenchError::Load(e.to_string()))?);
        }
        Ok::<_, BenchError>(all)
    })?;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let sim_cpu = cpu_rx.recv().unwrap_or_default();
    let _ = sim_thread.join();
    let mut latencies = latencies;
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(ThroughputReport {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        sim_cpu,
        p50: pick(0.5),
        p99: pick(0.99),
    })
}
