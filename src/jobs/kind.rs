//! The job-kind component: what a kind is ([`JobKind`]), what it runs with ([`KindContext`]),
//! and the macro that turns the registry list in `src/jobs/mod.rs` into the [`Kind`](super::Kind)
//! enum, its names, its settings schemas, its checks and its dispatch.
//!
//! A kind owns its settings struct: serde reads it, `#[derive(JsonSchema)]` describes it (name,
//! type, default, doc comment, bounds) for the job-file checker, the hints and
//! `asana-worker jobs schema`; `validate` adds what a schema cannot say. Nothing about a kind is
//! written anywhere else, so adding a kind is one module, one registry line and its docs.

use std::fmt::Debug;
use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::asana::AsanaClient;
use crate::config::jobs::{SettingsCheck, SettingsValue};
use crate::sinks::SinkContext;
use crate::worker::{JobOutcome, RunContext};

/// One kind of job.
pub trait JobKind {
    /// The name written in `kind = "…"`.
    const NAME: &'static str;

    /// One line saying what the kind does, for `jobs schema` and the docs.
    const SUMMARY: &'static str;

    /// The kind's `[settings]`: the one description of every setting (serde for reading,
    /// `JsonSchema` for checking and documenting). Use `#[serde(deny_unknown_fields)]`.
    type Settings: DeserializeOwned + JsonSchema + Debug + Clone + PartialEq + Send + Sync + 'static;

    /// Checks the schema cannot express (a value against another, a directory's
    /// permissions, a secret's presence, Asana's limits), run whenever job files are loaded:
    /// `validate`, start-up and reload. Report with `check.problem(key, message, hint)`.
    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        let _ = (settings, check);
    }

    /// Runs one attempt of a run. Must return promptly with [`JobOutcome::Interrupted`] once
    /// `cx.run.cancel` fires, having checkpointed what it finished.
    fn run(
        settings: &Self::Settings,
        cx: &KindContext<'_>,
    ) -> impl Future<Output = JobOutcome> + Send;
}

/// What a kind runs with.
#[derive(Debug, Clone, Copy)]
pub struct KindContext<'a> {
    /// The run: its row, cancellation, fenced checkpoints, clock.
    pub run: &'a RunContext,
    /// The job's definition (name, credential, policies).
    pub job: &'a super::Job,
    /// The whole job set (a digest finds the sync job whose tables it reads).
    pub jobs: &'a [super::Job],
    /// The Asana client of the job's credential, charged to its budget.
    pub client: &'a AsanaClient,
    /// What sinks are built with.
    pub sinks: &'a SinkContext,
}

/// Reads settings of kind `K` that passed the schema check, then runs `K::validate`.
pub(super) fn read_settings<K: JobKind>(
    value: &SettingsValue<'_>,
    check: &mut SettingsCheck<'_>,
) -> Option<K::Settings> {
    let settings: K::Settings = value.deserialize(check)?;
    let before = check.count();
    K::validate(&settings, check);
    (check.count() == before).then_some(settings)
}

/// Declares the registered kinds: `job_kinds! { Variant => path::KindType, … }` generates the
/// [`Kind`](super::Kind) enum (one variant per kind holding its settings), `Kind::NAMES`,
/// `Kind::schema`, `Kind::summary`, the [`KindCatalog`](crate::config::jobs::KindCatalog) the
/// job-file reader uses, and the dispatch of a run to its kind.
macro_rules! job_kinds {
    ($($(#[$doc:meta])* $variant:ident => $kind:ty),+ $(,)?) => {
        /// A job's kind with its typed settings: one variant per registered kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Kind {
            $($(#[$doc])* $variant(Box<<$kind as $crate::jobs::JobKind>::Settings>),)+
        }

        impl Kind {
            /// Names accepted in `kind = "…"`, in registry order.
            pub const NAMES: &'static [&'static str] =
                &[$(<$kind as $crate::jobs::JobKind>::NAME),+];

            /// The JSON schema of a kind's `[settings]`, None for an unknown kind.
            pub fn schema(name: &str) -> Option<schemars::Schema> {
                $(if name == <$kind as $crate::jobs::JobKind>::NAME {
                    return Some(schemars::schema_for!(<$kind as $crate::jobs::JobKind>::Settings));
                })+
                None
            }

            /// What a kind does, in one line, None for an unknown kind.
            pub fn summary(name: &str) -> Option<&'static str> {
                $(if name == <$kind as $crate::jobs::JobKind>::NAME {
                    return Some(<$kind as $crate::jobs::JobKind>::SUMMARY);
                })+
                None
            }

            fn read(
                name: &str,
                value: &$crate::config::jobs::SettingsValue<'_>,
                check: &mut $crate::config::jobs::SettingsCheck<'_>,
            ) -> Option<Kind> {
                $(if name == <$kind as $crate::jobs::JobKind>::NAME {
                    return $crate::jobs::kind::read_settings::<$kind>(value, check)
                        .map(|settings| Kind::$variant(Box::new(settings)));
                })+
                None
            }

            /// The kind's name, as written in `kind = "…"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Kind::$variant(_) => <$kind as $crate::jobs::JobKind>::NAME,)+
                }
            }

            /// Runs one attempt with the kind's runner.
            pub async fn run(&self, cx: &$crate::jobs::KindContext<'_>) -> $crate::worker::JobOutcome {
                match self {
                    $(Kind::$variant(settings) => {
                        <$kind as $crate::jobs::JobKind>::run(settings, cx).await
                    })+
                }
            }
        }

        impl $crate::config::jobs::NamedKind for Kind {
            fn name(&self) -> &'static str {
                Kind::name(self)
            }
        }

        /// The registered kinds, as the job-file reader needs them.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct Catalog;

        impl $crate::config::jobs::KindCatalog for Catalog {
            type Kind = Kind;

            fn names(&self) -> &'static [&'static str] {
                Kind::NAMES
            }

            fn schema(&self, kind: &str) -> Option<schemars::Schema> {
                Kind::schema(kind)
            }

            fn read(
                &self,
                kind: &str,
                settings: &$crate::config::jobs::SettingsValue<'_>,
                check: &mut $crate::config::jobs::SettingsCheck<'_>,
            ) -> Option<Kind> {
                Kind::read(kind, settings, check)
            }

            fn check_set(
                &self,
                jobs: &[$crate::config::jobs::JobSpec<Kind>],
            ) -> Vec<$crate::config::diagnostics::Diagnostic> {
                $crate::jobs::check_job_set(jobs)
            }
        }
    };
}

pub(super) use job_kinds;
