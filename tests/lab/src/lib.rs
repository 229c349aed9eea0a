//! floodgate's test lab, shared by the kernel suites (tests/*_netns.rs) and the benches (tests/benches/): one
//! copy of every set-up, reached as `floodgate_lab::...` instead of `#[path]` includes.
//!
//! - [`skip`]: whether a kernel suite can run here; a loud skip where it cannot, a failure under `CI=true`;
//! - [`netns`]: network namespaces and the server/attacker veth pair;
//! - [`daemon`]: `floodgate run` in a namespace on a test's own files, and the CLI beside it;
//! - [`child`]: a child process killed when its owner is dropped;
//! - [`wait`]: polling with a deadline;
//! - [`syn`]: bounded spoofed SYN floods through a raw socket;
//! - [`maillab`]: real Postfix and Dovecot inside a namespace, and their clients;
//! - [`gen`], [`geo_gen`]: deterministic mail logs and RIR files for benches and tests;
//! - [`proc_memory`]: this process's memory, for the benches' figures.

pub mod child;
pub mod daemon;
pub mod gen;
pub mod geo_gen;
pub mod maillab;
pub mod nats;
pub mod netns;
pub mod proc_memory;
pub mod skip;
pub mod syn;
pub mod wait;
