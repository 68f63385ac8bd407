//! `vfioctl watch`: resolves the daemon's options and runs it ([`crate::watch::daemon`]).
//! `--host` was refused while resolving (a usage error); the config was loaded once, and a
//! config that cannot be loaded at start is refused loudly (there is no last good one yet).

use std::time::Duration;

use super::{args, Exit, Options};
use crate::watch::daemon::{self, Daemon};

pub fn run(opts: &Options, args: &args::WatchArgs) -> Exit {
    let Some(loaded) = &opts.config else {
        return Exit::Failed;
    };
    let config = match &loaded.loaded {
        Ok(c) => c.clone(),
        Err(e) => {
            eprintln!(
                "vfioctl watch: {}: {}",
                loaded.path.display(),
                match e {
                    crate::config::LoadError::Invalid(d) => d.render(crate::config::Style::Plain),
                    e => e.to_string(),
                }
            );
            if !loaded.path.exists() {
                eprintln!(
                    "vfioctl watch: no config at {}: write one (vfio.toml(5); examples in /usr/share/doc/vfioctl/examples/), then start the service again",
                    loaded.path.display()
                );
            }
            return Exit::Failed;
        }
    };
    let result = daemon::run(Daemon {
        roots: opts.roots.clone(),
        state_dir: opts.state_dir.clone(),
        run_dir: opts.run_dir.clone(),
        config_path: loaded.path.clone(),
        config,
        access: loaded.access,
        debounce: Duration::from_millis(args.debounce_ms),
        resync: Duration::from_secs(args.resync),
        accounts: |c| crate::host::accounts::resolve(&crate::plan::ownership::account_names(c)),
        metrics_dir: args.metrics_dir.clone(),
        kubelet_dir: args.kubelet_dir.clone(),
    });
    match result {
        Ok(()) => Exit::Done,
        Err(e) => {
            eprintln!("vfioctl watch: {e}");
            Exit::Failed
        }
    }
}
