//! `watch`'s reconciler keeps the CDI spec after every pass, on the simulated kernel: written
//! once the pass has bound the groups, complete after a pass scoped to one function (it re-reads
//! the whole host), removed when the config hands nothing out any more.

use std::path::Path;

use vfioctl::apply::Options;
use vfioctl::config::{parse_str, Config};
use vfioctl::kernel::simulated::{fixtures::vm_layout, SimKernel};
use vfioctl::plan::Accounts;
use vfioctl::watch::host_reconciler::ApplyReconciler;
use vfioctl::watch::{Outcome, Reconciler, Scope};

fn config(text: &str) -> Config {
    parse_str(text, Path::new("t.toml")).unwrap_or_else(|d| panic!("{d:?}"))
}

fn no_accounts(_: &Config) -> Accounts {
    Accounts::default()
}

fn spec_names(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("vfioctl.json")).expect("spec written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn each_pass_keeps_the_spec_of_what_it_hands_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cdi = tmp.path().join("cdi");
    let opts = Options::new(tmp.path().join("state"), tmp.path().join("run"));
    let mut r = ApplyReconciler::new(SimKernel::from_snapshot(&vm_layout()), opts, no_accounts)
        .with_cdi_dir(cdi.clone());

    let edu = config(
        "version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:05.0\"\n\
         companions = [\"0000:00:05.1\"]\n[[device]]\nname = \"disk\"\naddress = \"0000:01:00.0\"\n",
    );
    let out = r.reconcile(&edu, Scope::All);
    assert!(
        matches!(out, Outcome::Converged { problems: 0, .. }),
        "{out:?}"
    );
    assert_eq!(
        spec_names(&cdi),
        [
            "edu",
            "disk",
            "0000:00:05.0",
            "0000:00:05.1",
            "0000:01:00.0"
        ]
    );

    // A pass scoped to one function still writes the whole spec.
    let out = r.reconcile(
        &edu,
        Scope::Device("0000:01:00.0".parse().expect("address")),
    );
    assert!(matches!(out, Outcome::Converged { .. }), "{out:?}");
    assert_eq!(spec_names(&cdi).len(), 5);

    // `disk` dropped: released by the pass, gone from the spec.
    let only_edu = config(
        "version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:05.0\"\n\
         companions = [\"0000:00:05.1\"]\n",
    );
    r.reconcile(&only_edu, Scope::All);
    assert_eq!(spec_names(&cdi), ["edu", "0000:00:05.0", "0000:00:05.1"]);

    r.reconcile(&config("version = 1\n"), Scope::All);
    assert!(!cdi.join("vfioctl.json").exists());
}

#[test]
fn without_a_cdi_dir_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = Options::new(tmp.path().join("state"), tmp.path().join("run"));
    let mut r = ApplyReconciler::new(SimKernel::from_snapshot(&vm_layout()), opts, no_accounts);
    let edu = config("version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:05.0\"\ncompanions = [\"0000:00:05.1\"]\n");
    r.reconcile(&edu, Scope::All);
    let entries: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.contains("cdi")), "{entries:?}");
}
