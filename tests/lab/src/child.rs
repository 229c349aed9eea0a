//! A child process killed and reaped when its owner is dropped: a test or bench that fails half-way leaves no
//! daemon running behind it.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// The child while its owner holds it; `None` once the owner has reaped it itself (`take()` it to wait for its
/// exit status).
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }
}

impl Deref for KillOnDrop {
    type Target = Option<Child>;
    fn deref(&self) -> &Option<Child> {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Option<Child> {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
