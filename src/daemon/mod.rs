//! `floodgate run`: the daemon. Sources feed one pipeline task (parse -> store + policy -> decisions ->
//! kernel), the control socket serves the CLI, signals reload or stop it.

pub mod client;
