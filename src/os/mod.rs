//! The operating system's edges that std does not cover, and the only place outside nft/ (libnftnl) where
//! floodgate calls libc with `unsafe`: each call sits in a small safe function with a `// SAFETY:` line.
//!
//! - [`poll`]: waiting for a descriptor to become readable, with a timeout (the sources' stop checks).
//! - [`netlink`]: a netlink socket owned as an fd (conntrack events, sock_diag dumps, nftables notifications).
//! - [`child`]: a child process waited for with a deadline, and killed with its process group.
//! - [`iface`]: the host's interfaces (getifaddrs) and their MTU.
//! - [`lock`] and [`user`]: an exclusive lock on a file, the effective user.

pub mod child;
pub mod iface;
pub mod lock;
pub mod netlink;
pub mod poll;
pub mod terminal;
pub mod user;
