//! The `hookgate` command.
//!
//! Today it validates receiver configs exactly as the server will accept them
//! (`hookgate check`), so a config can be linted in CI before it is deployed. The
//! server (`hookgate serve`) arrives with the host.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hookgate_core::Receiver;

#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about = "A webhook gateway for sandboxes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate receiver configs (JSON, the body of `POST /v1/webhooks/incoming`).
    ///
    /// Prints each file's verdict; an invalid field is named by its path, like
    /// `rules[1].actions[0].port: expected an integer 1..65535, found 70000`.
    /// Exits 1 if any file is invalid. `-` reads standard input.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { files } => {
            let mut failed = false;
            for file in files {
                let (label, text) = read(&file)?;
                match Receiver::from_slice(&text) {
                    Ok(r) => println!("{label}: ok: {}", summary(&r)),
                    Err(e) => {
                        failed = true;
                        eprintln!("{label}: {e}");
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn read(file: &PathBuf) -> Result<(String, Vec<u8>)> {
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        return Ok(("<stdin>".to_owned(), buf));
    }
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

/// One line about what the receiver will do.
fn summary(r: &Receiver) -> String {
    let secrets: Vec<&str> = r.secrets().iter().map(|s| s.name()).collect();
    let mut out = format!("receiver {:?}, {} rule(s)", r.name, r.rules.len());
    if !secrets.is_empty() {
        out.push_str(&format!(", secrets: {}", secrets.join(", ")));
    }
    let plugins = r.plugins();
    if !plugins.is_empty() {
        out.push_str(&format!(", plugins: {}", plugins.join(", ")));
    }
    out
}
