//! floodgate: defends Linux mail servers against brute force, DoS and spoofed-source SYN floods.
//!
//! Data flows one way: sources -> parse (rules -> [`event::Event`]) -> store + policy -> enforce / notify.

pub mod addr;
pub mod advise;
pub mod child;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decision;
pub mod enforce;
pub mod event;
pub mod geo;
pub mod matcher;
pub mod nft;
pub mod notice;
pub mod parser;
pub mod policy;
pub mod prefix;
pub mod reader;
pub mod rules;
pub mod source;
pub mod store;
