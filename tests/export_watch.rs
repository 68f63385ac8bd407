//! `watch`'s reconciler keeps the CDI spec after every pass, on the simulated kernel: written
//! once the pass has bound the groups, complete after a pass scoped to one function (its
//! closure laid over the host the latest whole pass left), removed when the config hands
//! nothing out any more; and never from a read of the host of its own.

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

// The spec is kept from what each pass read: a whole pass reads the host once (no second read
// for the spec), a scoped one only its function's closure, and a function unplugged before its
// scoped pass leaves the spec with it.
#[test]
fn keeping_the_spec_reads_the_host_no_more_than_the_pass() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cdi = tmp.path().join("cdi");
    let opts = Options::new(tmp.path().join("state"), tmp.path().join("run"));
    let mut r = ApplyReconciler::new(SimKernel::from_snapshot(&vm_layout()), opts, no_accounts)
        .with_cdi_dir(cdi.clone());
    let edu_disk = config(
        "version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:05.0\"\n\
         companions = [\"0000:00:05.1\"]\n[[device]]\nname = \"disk\"\naddress = \"0000:01:00.0\"\n",
    );
    let reads = |r: &ApplyReconciler<SimKernel>| r.host().snapshot_reads();

    let before = reads(&r);
    r.reconcile(&edu_disk, Scope::All);
    let after = reads(&r);
    assert_eq!(after.0 - before.0, 1, "one whole read: the pass's own");
    assert_eq!(spec_names(&cdi).len(), 5);

    // Converged: the pass reads the host once, and the spec needs nothing more.
    r.reconcile(&edu_disk, Scope::All);
    let again = reads(&r);
    assert_eq!((again.0 - after.0, again.1 - after.1), (1, 0));
    assert_eq!(spec_names(&cdi).len(), 5);

    // Scoped: no whole read at all, and the spec is still whole.
    let disk: vfioctl::pci::PciAddress = "0000:01:00.0".parse().expect("address");
    r.reconcile(&edu_disk, Scope::Device(disk));
    let scoped = reads(&r);
    assert_eq!(scoped.0, again.0, "a scoped pass reads no whole host");
    assert_eq!(spec_names(&cdi).len(), 5);

    // The disk is unplugged; its scoped pass (the `remove` uevent's) drops it from the spec.
    r.host().unplug(disk);
    r.reconcile(&edu_disk, Scope::Device(disk));
    assert_eq!(reads(&r).0, again.0);
    assert_eq!(spec_names(&cdi), ["edu", "0000:00:05.0", "0000:00:05.1"]);
}
