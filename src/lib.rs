//! floodgate: defends Linux mail servers against brute force, DoS and spoofed-source SYN floods.
//!
//! Data flows one way: sources -> parse (rules -> [`event::Event`]) -> store + policy -> enforce / notify.

pub mod addr;
pub mod event;
pub mod matcher;
pub mod parser;
pub mod prefix;
pub mod rules;
pub mod config;
pub mod store;
pub mod reader;
pub mod cli;
