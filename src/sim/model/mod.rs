//! The simulator's model layer: what the simulated Asana *is* and how it changes, with no HTTP in
//! it. Routes, the admin API and the background tasks are adapters over it.
//!
//! - [`world`]: the organization's objects, generated from a seed, rendered in Asana's shapes and
//!   changed by plain methods.
//! - [`events`]: the Events API's log and sync tokens, and the event bodies changes produce.
//! - [`edit`]: changes to the world that record their events (the only way writers change tasks).
//! - [`changes`]: those changes as data (JSON or drawn at random), for tests that mirror the
//!   world.
//! - [`requests`]: task changes read from request bodies, shared by the API and the admin API.
//! - [`exports`]: exports and export jobs, their registry, and the files they produce.
//! - [`rich_text`]: Asana rich text, escaped and checked.
//!
//! Modules here import each other and the foundations (`config`, `input`, `wire`), never
//! `state`, `routes`, `admin` or `background`.

pub mod changes;
pub mod edit;
pub mod events;
pub mod exports;
pub mod requests;
pub mod rich_text;
pub mod world;
