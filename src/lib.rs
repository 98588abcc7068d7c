//! asana-worker: a headless daemon that runs scheduled jobs against the Asana REST API, and the
//! Asana simulator it is tested against.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into [`cli`].

pub mod asana;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod health;
pub mod jobs;
pub mod scheduler;
pub mod sim;
pub mod sinks;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod worker;
