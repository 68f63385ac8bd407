//! `vfioctl udev-claim ADDRESS` (hidden): the udev rule's boot-time claim. Prints
//! `VFIOCTL_CLAIM=DRIVER` for `IMPORT{program}` when the config wants the function, so the
//! rule can go on to run `vfioctl reconcile --device`; prints nothing otherwise.

use crate::pci::PciAddress;
use crate::watch::early_claim::{self, Claim};

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
    let roots = global.roots.clone();
    let ids = match early_claim::read_ids(&roots, &address) {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("vfioctl udev-claim: {address}: {e}");
            return Exit::Failed;
        }
    };
    let Some(driver) = early_claim::wanted_driver(config, &address, Some(&ids)) else {
        return Exit::Done;
    };
    match early_claim::claim(&roots, &global.run_dir, &address, driver) {
        Ok(claim) => {
            if let Claim::Written { previous } = &claim {
                tracing::info!(device = %address, driver, ?previous, "driver_override written");
            }
            outln!("VFIOCTL_CLAIM={driver}");
            Exit::Done
        }
        Err(e) => {
            eprintln!("vfioctl udev-claim: {address}: {e}");
            Exit::Failed
        }
    }
}
