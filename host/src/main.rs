//! The `hookgate` command: `serve` runs the gateway; `check` validates receiver
//! configs exactly as the server accepts them, for CI.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hookgate::settings::{LogFormat, Settings};
use hookgate_core::Receiver;

#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about = "A webhook gateway for sandboxes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: receiver endpoint, management API, runner.
    ///
    /// Settings come from the built-in defaults, then `--config`, then HOOKGATE_*
    /// environment variables (see `hookgate settings`).
    Serve {
        /// A TOML settings file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the default settings file, with every key documented.
    Settings,
    /// Programs that run inside sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
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

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// The built-in echo server: records every request it receives and lists them
    /// at GET /_echo/requests. Listens on $PORT and every $HOOKGATE_PORT_<n>.
    Echo,
}

/// mimalloc: the request path allocates many small, short-lived objects across
/// threads, where glibc's allocator spent a tenth of the host's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref(), std::env::vars())?;
            init_logs(&settings);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(SandboxCommand::Echo) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(hookgate::sandbox::echo::run())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Settings => {
            print!("{}", hookgate::settings::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
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

fn init_logs(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(settings: Settings) -> Result<()> {
    let data_dir = settings.data_dir.clone();
    let host = hookgate::Host::start(settings, hookgate::Plane::Configured).await?;
    let base = host.state.settings.public_base();
    let token_file = hookgate::token_path(&data_dir);
    println!(
        "hookgate listening on http://{} (data: {})",
        host.addr,
        data_dir.display()
    );
    if host.token_generated {
        println!(
            "admin token (shown once; saved to {}): {}",
            token_file.display(),
            host.admin_token
        );
    } else {
        println!(
            "admin token: in {} (or HOOKGATE_ADMIN_TOKEN)",
            token_file.display()
        );
    }
    let token = if host.state.settings.admin_token.is_empty() {
        format!("$(cat {})", token_file.display())
    } else {
        "$HOOKGATE_ADMIN_TOKEN".to_owned()
    };
    println!(
        "next: create a receiver:\n  curl -sS -X POST {base}/v1/webhooks/incoming \\\n    -H \"Authorization: Bearer {token}\" \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"name\":\"hello\",\"auth\":{{\"auth_type\":\"none\"}},\"target\":{{\"target_type\":\"fixed_sandbox_name\",\"sandbox_name\":\"hello\"}},\"rules\":[{{\"actions\":[{{\"action_type\":\"ensure_sandbox\",\"template\":{{\"image\":\"echo\"}}}},{{\"action_type\":\"deliver_to_port\",\"port\":8080}}]}}]}}'"
    );
    let stopper = host.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining requests and actions");
        let _ = stopper.send(true);
    });
    host.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
