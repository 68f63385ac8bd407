//! Standard output that cannot be written: every command prints through [`out!`]/[`outln!`]
//! (never `print!`, which panics on a failed write), and [`finish`] turns the first failure
//! into the exit status.
//!
//! - A full or failing stdout (`vfioctl status > /dev/full`): one message on stderr, exit 1.
//! - A closed pipe (`vfioctl status | head`): quiet. One-shot commands run with SIGPIPE at its
//!   default, so the process ends as `cat` or `ls` would; where SIGPIPE is ignored (`watch`),
//!   the write fails with `EPIPE` and the rest of the output is dropped silently.
//!
//! After the first failure nothing more is written, so a long report does not repeat it.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use super::Exit;

/// The first write error, if any.
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout, remembering the first failure instead of panicking. Use [`out!`].
pub fn write(args: fmt::Arguments<'_>) {
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_some() {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        *failed = Some(e);
    }
}

/// Flushes stdout and folds a failed write into `exit`: a closed pipe keeps `exit` and stays
/// quiet; any other failure is reported as `vfioctl COMMAND: cannot write the output: ...`
/// and gives [`Exit::Failed`].
pub fn finish(command: &str, exit: Exit) -> Exit {
    let flushed = io::stdout().lock().flush();
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if let (None, Err(e)) = (failed.as_ref(), flushed) {
        *failed = Some(e);
    }
    match failed.take() {
        None => exit,
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => exit,
        Some(e) => {
            // stderr may be gone too; there is nowhere else to say it.
            let _ = writeln!(
                io::stderr(),
                "vfioctl {command}: cannot write the output: {e}"
            );
            Exit::Failed
        }
    }
}

/// `print!` for commands: a failed write is remembered and reported by [`finish`].
#[macro_export]
#[doc(hidden)]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// `println!` for commands: a failed write is remembered and reported by [`finish`].
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
