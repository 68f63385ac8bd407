//! `vfioctl udev-claim ADDRESS` (hidden): the udev rule's boot-time claim. Parses, loads the
//! config and runs [`crate::apply::early_claim`] on the live host. Prints
//! `VFIOCTL_CLAIM=DRIVER` for `IMPORT{program}` when the function is claimed (or already was),
//! so the rule can go on to run `vfioctl reconcile --device`; prints nothing otherwise (not
//! named, or refused: the reasons are in the log and under the run directory).

use crate::apply::early_claim::{early_claim, EarlyClaim};
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::pci::PciAddress;

use super::{args, Exit, Options};

/// `--host` was refused while resolving the options (a usage error, exit 2): the claim writes
/// this machine's sysfs. The config was loaded once, by the one loader, refusing a config
/// others can change unless `--allow-insecure-config`.
pub fn run(global: &Options, args: &args::UdevClaimArgs) -> Exit {
    let address: PciAddress = match args.address.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vfioctl udev-claim: {e}");
            return Exit::Usage;
        }
    };
    let config = match global.config.as_ref().map(|c| &c.loaded) {
        Some(Ok(c)) => c,
        Some(Err(rejected)) => {
            eprintln!("vfioctl udev-claim: config not usable, claiming nothing: {rejected}");
            return Exit::Failed;
        }
        None => return Exit::Failed,
    };
    let host = LinuxHost::new(global.roots.clone(), Timeouts::default());
    match early_claim(&host, config, &global.run_dir, address, None) {
        Ok(EarlyClaim::Written {
            driver, previous, ..
        }) => {
            tracing::info!(device = %address, driver, ?previous, "driver_override written");
            outln!("VFIOCTL_CLAIM={driver}");
            Exit::Done
        }
        Ok(EarlyClaim::AlreadySet { driver }) => {
            outln!("VFIOCTL_CLAIM={driver}");
            Exit::Done
        }
        Ok(EarlyClaim::Refused { entry, reasons, .. }) => {
            eprintln!(
                "vfioctl udev-claim: {address}: not claimed for [[device]] `{entry}`: {}; set \
                 force = true in the entry to take it anyway",
                reasons.join("; ")
            );
            Exit::Done
        }
        Ok(EarlyClaim::NotWanted) => Exit::Done,
        Err(e) => {
            eprintln!("vfioctl udev-claim: {address}: {e}");
            Exit::Failed
        }
    }
}
