//! Configuration: daemon settings ([`settings`]) and job definitions ([`jobs`]), both validated up
//! front with errors that name the file, the place and a fix ([`diagnostics`]).

pub mod diagnostics;
pub mod jobs;
pub mod settings;
pub mod values;
