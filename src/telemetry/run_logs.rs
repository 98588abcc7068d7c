//! The log lines of recent runs, kept in memory for the status page's run view: a tracing layer
//! that copies every event logged inside a worker's `run` span (the job's own lines, the
//! client's, the sinks') under the span's `run_id`. The log filter applies as for the log
//! itself; only the newest [`MAX_RUNS`] runs and [`MAX_LINES`] lines of each are kept, and a
//! restart forgets them (the daemon's log, journald or the cluster's, keeps everything).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

/// Runs whose lines are kept.
pub const MAX_RUNS: usize = 200;
/// Lines kept per run (the newest).
pub const MAX_LINES: usize = 300;
/// Longest line kept.
const MAX_LINE: usize = 2000;

#[derive(Default)]
struct Kept {
    runs: HashMap<Uuid, VecDeque<String>>,
    /// Run ids, oldest first, for eviction.
    order: VecDeque<Uuid>,
}

fn kept() -> &'static Mutex<Kept> {
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process keeps run log lines (the daemon's log subscriber has the layer).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The kept lines of run `id`, oldest first.
pub fn lines(id: Uuid) -> Vec<String> {
    let kept = kept().lock().unwrap_or_else(|p| p.into_inner());
    kept.runs
        .get(&id)
        .map(|lines| lines.iter().cloned().collect())
        .unwrap_or_default()
}

fn keep(id: Uuid, line: String) {
    let mut kept = kept().lock().unwrap_or_else(|p| p.into_inner());
    if !kept.runs.contains_key(&id) {
        if kept.order.len() >= MAX_RUNS
            && let Some(oldest) = kept.order.pop_front()
        {
            kept.runs.remove(&oldest);
        }
        kept.order.push_back(id);
    }
    let lines = kept.runs.entry(id).or_default();
    if lines.len() >= MAX_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

/// The run a span belongs to (stored in the `run` span's extensions).
struct RunId(Uuid);

/// Finds `run_id` among a span's fields.
#[derive(Default)]
struct RunIdVisitor(Option<Uuid>);

impl Visit for RunIdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "run_id" {
            self.0 = Uuid::parse_str(&format!("{value:?}")).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "run_id" {
            self.0 = Uuid::parse_str(value).ok();
        }
    }
}

/// Writes an event's message and fields as `message key=value …`.
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// The layer; add it after the log filter.
#[derive(Debug, Default)]
pub struct RunLogLayer;

impl RunLogLayer {
    /// The layer, marking this process as one that keeps run lines.
    pub fn new() -> Self {
        ENABLED.store(true, Ordering::Relaxed);
        RunLogLayer
    }
}

impl<S> Layer<S> for RunLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" {
            return;
        }
        let mut visitor = RunIdVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(run), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(RunId(run));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(run) = scope
            .from_root()
            .find_map(|span| span.extensions().get::<RunId>().map(|r| r.0))
        else {
            return;
        };
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        let time = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let mut line = format!(
            "{} {:>5} {}: {}{}",
            time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            metadata.level(),
            metadata.target(),
            visitor.message,
            visitor.fields
        );
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        keep(run, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_inside_a_run_span_are_kept_under_its_id() {
        let subscriber = tracing_subscriber::registry().with(RunLogLayer::new());
        let run = Uuid::new_v4();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any run");
            let span = tracing::info_span!("run", job = "audit", run_id = %run, attempt = 1);
            let _entered = span.enter();
            tracing::warn!(batch = 3, "Sink slow");
            let inner = tracing::info_span!("request");
            let _inner = inner.enter();
            tracing::info!("Inside a nested span");
        });
        let kept = lines(run);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(
            kept[0].contains("WARN") && kept[0].contains("Sink slow batch=3"),
            "{kept:?}"
        );
        assert!(kept[1].contains("Inside a nested span"), "{kept:?}");
        assert!(enabled());
        assert!(lines(Uuid::new_v4()).is_empty());
    }
}
