//! `asana-worker migrate`: creates or upgrades the database schema, then exits. The daemon also
//! migrates at start; this lets an operator do it ahead of a rollout.

use anyhow::Context;
use clap::Args;

use super::common::ConfigArgs;

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Migrates.
pub async fn run(args: MigrateArgs) -> anyhow::Result<u8> {
    let settings = args.config.load()?;
    crate::store::open(&settings.database.url)
        .await
        .with_context(|| {
            format!(
                "migrating {}",
                crate::daemon::redact_url(&settings.database.url)
            )
        })?;
    println!(
        "database {} is up to date",
        crate::daemon::redact_url(&settings.database.url)
    );
    Ok(super::EXIT_OK)
}
