//! `ferry-gen OUT_DIR`: writes the man pages and shell completions of
//! `ferry` and `ferry-node` from their clap definitions, so the Debian
//! packages (`deploy/package.sh`) ship documentation that cannot drift from
//! the real flags. A separate program rather than a hidden subcommand: the
//! installed binaries carry neither clap_mangen nor clap_complete.
//!
//! Layout under OUT_DIR/<cmd>/, matching the packages' asset paths:
//! `man/<cmd>.1` and `man/<cmd>-<subcommand>.1` (one page per subcommand,
//! as git does), `bash/<cmd>`, `zsh/_<cmd>`, `fish/<cmd>.fish`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else { bail!("usage: ferry-gen OUT_DIR") };
    let out = PathBuf::from(out);
    for cmd in [ferry_client::cli::Cli::command(), ferry_node::cli::Cli::command()] {
        write_all(cmd, &out)?;
    }
    Ok(())
}

fn write_all(cmd: clap::Command, out: &Path) -> anyhow::Result<()> {
    let name = cmd.get_name().to_owned();
    let out = out.join(&name);
    man_pages(&cmd, &out.join("man"))?;
    let mut cmd = cmd;
    for (shell, dir, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = out.join(dir);
        fs::create_dir_all(&dir)?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        fs::write(dir.join(&file), buf).with_context(|| format!("writing {}/{file}", dir.display()))?;
    }
    Ok(())
}

/// One page for the command and one per visible subcommand, recursively
/// (`ferry-node-init.1`, `ferry-hook-install.1`), by clap_mangen's own
/// naming.
fn man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    clap_mangen::generate_to(without_help(cmd.clone()), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

/// clap's implicit `help` subcommand would add a `<cmd>-help-*` page per
/// subcommand that only repeats `--help`.
fn without_help(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true).mut_subcommands(without_help)
}
