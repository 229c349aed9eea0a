//! `floodgate generate` (hidden): what a package ships beside the binary, made by the binary itself from its own
//! command line and its own example config, so none of it can drift from the code: the man pages (`floodgate(8)`,
//! one `floodgate-COMMAND(8)` per command, `floodgate.toml(5)`), the shell completions (bash, zsh, fish) and the
//! packaged `/etc/floodgate/floodgate.toml`.
//!
//! Why a hidden subcommand rather than build.rs: the command tree lives in the library, which build.rs cannot
//! use without compiling it twice, and the package wants what the *release* binary says (the Makefile runs it
//! before `cargo deb --no-build`). Hidden, because an operator never needs it: it appears in no help, page or
//! completion.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::example_config;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Man pages into DIR: floodgate.8, floodgate-COMMAND.8 per command, floodgate.toml.5.
    Man { dir: PathBuf },
    /// Completions into DIR: floodgate.bash, _floodgate (zsh), floodgate.fish.
    Completions { dir: PathBuf },
    /// The packaged config file: the documented preset with an empty allowlist.
    Config { file: PathBuf },
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Man { dir } => write_man_pages(&dir).map(|_| ()),
        What::Completions { dir } => write_completions(&dir).map(|_| ()),
        What::Config { file } => write_file(&file, example_config::packaged().as_bytes()),
    }
}

/// The shells a package completes for, and the file name each one looks for in its vendor directory.
pub const COMPLETIONS: [(Shell, &str); 3] =
    [(Shell::Bash, "floodgate.bash"), (Shell::Zsh, "_floodgate"), (Shell::Fish, "floodgate.fish")];

/// Writes every page into `dir`; returns their paths.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    let mut written = Vec::new();
    for (name, page) in command_pages()? {
        let path = dir.join(format!("{name}.8"));
        write_file(&path, &page)?;
        written.push(path);
    }
    let path = dir.join("floodgate.toml.5");
    write_file(&path, example_config::man_page().as_bytes())?;
    written.push(path);
    Ok(written)
}

/// `floodgate(8)` and a page per command, nested ones too (`floodgate-allow-add`), as (page name, roff). Section
/// 8: floodgate is an administrator's tool that needs root.
pub fn command_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut root = super::Cli::command();
    // Propagates the global options (--config, --db, -v) and the version into every subcommand, as at run time.
    root.build();
    let mut pages = Vec::new();
    add_pages(&root, "floodgate", "floodgate", &mut pages)?;
    Ok(pages)
}

/// `name` is the page's (`floodgate-allow-add`), `bin` what the operator types (`floodgate allow add`).
fn add_pages(cmd: &clap::Command, name: &str, bin: &str, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut roff = Vec::new();
    let page_cmd = cmd.clone().name(name.to_string()).bin_name(bin.to_string());
    clap_mangen::Man::new(page_cmd)
        .section("8")
        .manual("floodgate manual")
        .source(format!("floodgate {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff)
        .with_context(|| format!("rendering the man page {name}(8)"))?;
    pages.push((name.to_string(), roff));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        add_pages(sub, &format!("{name}-{}", sub.get_name()), &format!("{bin} {}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// Writes the completion scripts into `dir`; returns their paths.
pub fn write_completions(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    let mut written = Vec::new();
    for (shell, file) in COMPLETIONS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut visible_commands(), "floodgate", &mut script);
        let path = dir.join(file);
        write_file(&path, &script)?;
        written.push(path);
    }
    Ok(written)
}

/// The command line without its hidden commands: clap_complete completes hidden subcommands too, and clap
/// cannot remove one, so the root is rebuilt from its arguments and visible subcommands (all a completion reads).
fn visible_commands() -> clap::Command {
    let full = super::Cli::command();
    clap::Command::new("floodgate")
        .version(super::VERSION)
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_has_a_page_and_the_generator_has_none() {
        let pages = command_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in ["floodgate", "floodgate-block", "floodgate-run", "floodgate-allow-add", "floodgate-geo-update"]
        {
            assert!(names.contains(&expected), "no page {expected}: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate") || n.ends_with("-help")), "{names:?}");
        let block = &pages.iter().find(|(n, _)| n == "floodgate-block").unwrap().1;
        let block = String::from_utf8_lossy(block);
        assert!(block.contains(".TH floodgate-block 8"), "{block}");
        // The global options reach every command's page, as they work on every command.
        assert!(block.contains("\\-\\-config"), "{block}");
    }

    #[test]
    fn completions_name_the_commands_and_not_the_hidden_generator() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_completions(dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        for p in paths {
            let text = fs::read_to_string(&p).unwrap();
            assert!(text.contains("reconcile"), "{}: no `reconcile`", p.display());
            assert!(!text.contains("generate"), "{}: completes the hidden `generate`", p.display());
        }
    }
}
