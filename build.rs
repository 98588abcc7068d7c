//! Rebuilds when a migration changes: `sqlx::migrate!` embeds the files at compile time, and
//! cargo would not otherwise notice a new or edited migration.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
