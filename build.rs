//! Build script: stamps the git commit the binary is built from into `floodgate --version`
//! (`FLOODGATE_GIT_COMMIT`), so a bug report or a package names the exact tree. A tarball, a vendored copy or a
//! machine without git builds as well, with the commit "unknown": nothing here can fail a build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match git_checkout(&manifest_dir) {
        Some(checkout) => {
            // HEAD moves on a checkout or a commit: HEAD itself (detached, or a branch switch) and the branch's ref
            // (a new commit on it; packed-refs after `git gc` or a fetch). A worktree keeps HEAD in its own git
            // dir and the refs in the common one.
            // Only files that exist: cargo reruns the script on every build for a missing one (a branch whose
            // ref is packed has no loose file; a fresh clone may have no packed-refs).
            let mut watched = vec![checkout.git_dir.join("HEAD"), checkout.common_dir.join("packed-refs")];
            watched.extend(checkout.head_ref.as_ref().map(|branch| checkout.common_dir.join(branch)));
            for path in watched.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            git(&manifest_dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=FLOODGATE_GIT_COMMIT={commit}");
}

struct Checkout {
    git_dir: PathBuf,
    common_dir: PathBuf,
    /// `refs/heads/NAME` when HEAD is on a branch.
    head_ref: Option<String>,
}

/// The git checkout this crate is the top of; None outside one. A crate unpacked inside some other repository
/// (vendored, or a tarball under a home kept in git) is not that repository's commit: the top must be ours.
fn git_checkout(manifest_dir: &Path) -> Option<Checkout> {
    let top = PathBuf::from(git(manifest_dir, &["rev-parse", "--show-toplevel"])?);
    let same =
        |a: &Path, b: &Path| std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a));
    if !same(&top, manifest_dir) {
        return None;
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            manifest_dir.join(p)
        }
    };
    let git_dir = absolute(git(manifest_dir, &["rev-parse", "--git-dir"])?);
    let common_dir = absolute(git(manifest_dir, &["rev-parse", "--git-common-dir"])?);
    let head_ref = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]);
    Some(Checkout { git_dir, common_dir, head_ref })
}

/// One line of a git command's output; None when git is missing or the command fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
