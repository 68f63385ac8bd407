//! The `vfioctl` binary: parse the command line, set up logging, dispatch, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match vfioctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(cli.command, vfioctl::cli::Command::Watch(_)) {
        restore_default_sigpipe();
    }
    init_logging(cli.global.verbose);
    vfioctl::cli::run(cli).into()
}

/// A one-shot command piped into `head` should end quietly, as other Unix tools do, instead of
/// panicking on a failed write to stdout. `watch` keeps Rust's default (SIGPIPE ignored) so a
/// client that hangs up on its sockets can never kill the daemon.
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called once, before any other thread exists; SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Plain text on stderr; under systemd (stderr is the journal), native journal entries with a
/// priority and the fields ADDRESS=, GROUP=, ACTION= (see `vfioctl::journald`).
fn init_logging(verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let journal = vfioctl::journald::stderr_is_journal()
        .then(|| {
            vfioctl::journald::JournaldLayer::connect(std::path::Path::new(
                vfioctl::journald::JOURNAL_SOCKET,
            ))
            .ok()
        })
        .flatten();
    let default = match verbose {
        // The journal keeps what each pass changed (it filters by priority itself).
        0 if journal.is_some() => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("VFIOCTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    if let Some(journal) = journal {
        tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
