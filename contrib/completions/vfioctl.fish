# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vfioctl_global_optspecs
    string join \n v/verbose sysfs-root= dev-root= proc-root= state-dir= run-dir= host= cdi-dir= h/help V/version
end

function __fish_vfioctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vfioctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vfioctl_using_subcommand
    set -l cmd (__fish_vfioctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vfioctl -n "__fish_vfioctl_needs_command" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -l cdi-dir -d 'Where `reconcile` and `watch` keep the CDI spec (`vfioctl.json`) of what the config hands out; `rollback` removes it [default: /var/run/cdi]' -r -F
complete -c vfioctl -n "__fish_vfioctl_needs_command" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "validate" -d 'Check a config file alone, without reading any host'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "schema" -d 'Print the JSON Schema of the config file'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "status" -d 'Show the host: IOMMU groups, their members, drivers, and viability'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "snapshot" -d 'Print a snapshot of the host as JSON (use it later with `--host`)'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "reconcile" -d 'Make the host match the config (or, with `--dry-run`, show the plan)'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "rollback" -d 'Return every device vfioctl took to its recorded original state'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "watch" -d 'Keep the host converged: re-apply on hotplug, config edits and SIGHUP; hold domains'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "cdi" -d 'Print the CDI spec (Container Device Interface) of what the config hands out'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "export" -d 'Print what the config hands out in another tool\'s format'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "domain" -d 'Use a domain held by `vfioctl watch`'
complete -c vfioctl -n "__fish_vfioctl_needs_command" -f -a "iommufd" -d 'Get a fresh iommufd (/dev/iommu) from `vfioctl watch`, for a VMM that binds its own devices'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand validate" -s c -l config -d 'The config file (same as FILE)' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand validate" -l json -d 'Print diagnostics as JSON'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand validate" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand validate" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand validate" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand schema" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand schema" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand schema" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l format -d 'Output format (`--json` is `--format json`)' -r -f -a "text\t''
json\t''
openmetrics\t'Prometheus text (0.0.4), as `watch --metrics-dir` writes it'"
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -s c -l config -d 'With `--format openmetrics`: count functions against this config and report the drift' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -l json -d 'Print the snapshot as JSON'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -s o -l output -d 'Write to FILE instead of standard output' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand snapshot" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -s c -l config -d 'The config file' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l device -d 'Reconcile only this function and its IOMMU group closure (for udev rules)' -r
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l lock-timeout -d 'How long to wait for the reconcile lock, in seconds' -r
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l cdi-dir -d 'Where `reconcile` and `watch` keep the CDI spec (`vfioctl.json`) of what the config hands out; `rollback` removes it [default: /var/run/cdi]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l allow-insecure-config -d 'Use a config that someone besides root (or you) can change: its group or every user can write it or a directory on its path, or another user owns it. Without this flag such a config is refused (as sshd\'s StrictModes refuses such files), since whoever can edit it decides what vfioctl does to the host as root'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l dry-run -d 'Show the plan; change nothing'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l check -d 'Exit 3 when changes are pending (implies --dry-run)'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l json -d 'Print the plan as JSON'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -l no-domains -d 'Apply the bindings only: leave the config\'s [[domain]]s to `vfioctl watch` without asking it, and do not exit 4 when none runs (for the udev rule, which runs at boot before the service; the service\'s own pass holds the domains)'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand reconcile" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l lock-timeout -d 'How long to wait for the reconcile lock, in seconds' -r
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l cdi-dir -d 'Where `reconcile` and `watch` keep the CDI spec (`vfioctl.json`) of what the config hands out; `rollback` removes it [default: /var/run/cdi]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -l dry-run -d 'Show what would be undone; change nothing'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand rollback" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -s c -l config -d 'The config file' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l resync -d 'Periodic full resync, in seconds (0 disables)' -r
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l debounce-ms -d 'Quiet period that coalesces bursts of events, in milliseconds' -r
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l metrics-dir -d 'After each pass, write metrics to DIR/vfioctl.prom (node_exporter\'s textfile collector)' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l kubelet-dir -d 'Serve a kubelet device plugin in DIR (kubelet\'s: /var/lib/kubelet/device-plugins): one resource vfioctl.io/NAME per [[device]], one unit per IOMMU group' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l cdi-dir -d 'Where `reconcile` and `watch` keep the CDI spec (`vfioctl.json`) of what the config hands out; `rollback` removes it [default: /var/run/cdi]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -l allow-insecure-config -d 'Use a config that someone besides root (or you) can change: its group or every user can write it or a directory on its path, or another user owns it. Without this flag such a config is refused (as sshd\'s StrictModes refuses such files), since whoever can edit it decides what vfioctl does to the host as root'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand watch" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -s c -l config -d 'The config file' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -s o -l output -d 'Write the spec to FILE (atomically) instead of standard output' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -l allow-insecure-config -d 'Use a config that someone besides root (or you) can change: its group or every user can write it or a directory on its path, or another user owns it. Without this flag such a config is refused (as sshd\'s StrictModes refuses such files), since whoever can edit it decides what vfioctl does to the host as root'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand cdi" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and not __fish_seen_subcommand_from libvirt" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and not __fish_seen_subcommand_from libvirt" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and not __fish_seen_subcommand_from libvirt" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and not __fish_seen_subcommand_from libvirt" -f -a "libvirt" -d 'Print libvirt `<hostdev mode=\'subsystem\' type=\'pci\' managed=\'no\'>` elements for a `[[device]]` (every one without NAME), for `virsh attach-device`'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -s c -l config -d 'The config file' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l host -d 'Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l sysfs-root -d 'Root of sysfs [default: /sys]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l dev-root -d 'Root of /dev [default: /dev]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l proc-root -d 'Root of /proc [default: /proc]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -l allow-insecure-config -d 'Use a config that someone besides root (or you) can change: its group or every user can write it or a directory on its path, or another user owns it. Without this flag such a config is refused (as sshd\'s StrictModes refuses such files), since whoever can edit it decides what vfioctl does to the host as root'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand export; and __fish_seen_subcommand_from libvirt" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and not __fish_seen_subcommand_from open" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and not __fish_seen_subcommand_from open" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and not __fish_seen_subcommand_from open" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and not __fish_seen_subcommand_from open" -f -a "open" -d 'Receive a held domain\'s fds and run COMMAND with them inherited'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and __fish_seen_subcommand_from open" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and __fish_seen_subcommand_from open" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and __fish_seen_subcommand_from open" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and __fish_seen_subcommand_from open" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand domain; and __fish_seen_subcommand_from open" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and not __fish_seen_subcommand_from open" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and not __fish_seen_subcommand_from open" -s h -l help -d 'Print help'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and not __fish_seen_subcommand_from open" -s V -l version -d 'Print version'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and not __fish_seen_subcommand_from open" -f -a "open" -d 'Receive a freshly opened /dev/iommu from `vfioctl watch` and run COMMAND with it inherited, its number in VFIOCTL_IOMMUFD_FD'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and __fish_seen_subcommand_from open" -l state-dir -d 'Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and __fish_seen_subcommand_from open" -l run-dir -d 'Where vfioctl keeps its lock, socket and in-flight records (cleared at boot) [default: /run/vfioctl]' -r -F
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and __fish_seen_subcommand_from open" -s v -l verbose -d 'More log output (repeat for more); logs go to stderr'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and __fish_seen_subcommand_from open" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vfioctl -n "__fish_vfioctl_using_subcommand iommufd; and __fish_seen_subcommand_from open" -s V -l version -d 'Print version'
