//! Network interfaces backed by PCI functions, and what the host does with them.
//!
//! Interfaces come from `/sys/class/net/*/device`, walked up to the PCI function (a virtio-net
//! interface hangs off a `virtioN` child). State is `operstate` and the IFF_UP bit of `flags`.
//!
//! Addresses and routes come from `/proc` alone, so the scan stays under `--proc-root` without
//! netlink:
//! - IPv6 addresses: `/proc/net/if_inet6` names the interface; link-local and host-scope
//!   addresses are skipped.
//! - IPv4 addresses: `/proc/net/fib_trie` lists local addresses (`/32 host LOCAL`) but not
//!   their interface. Each is attributed to the interface whose connected route in
//!   `/proc/net/route` (a route without RTF_GATEWAY) contains it, longest prefix first; the
//!   address is written with that route's prefix length. Loopback addresses are ignored. An
//!   address without a connected route in the main table (e.g. `/32` with `noprefixroute`)
//!   cannot be attributed this way and is left out; its interface still counts its routes.
//! - Routes: lines of `/proc/net/route` (which has no header at all when empty) and
//!   `/proc/net/ipv6_route`, per interface; IPv6 local, cache, link-local (fe80::/10) and
//!   multicast (ff00::/8) routes are not counted, since every up interface has them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::host::snapshot::NetInterface;
use crate::pci::PciAddress;

use super::read::{hex_u32, Need, Reader};
use super::usage::function_above;

const IFF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF6_CACHE: u32 = 0x0100_0000;
const RTF6_LOCAL: u32 = 0x8000_0000;

/// What `/proc/net` says, per interface name.
#[derive(Debug, Default)]
pub struct ProcNet {
    pub addresses: BTreeMap<String, Vec<String>>,
    pub routes: BTreeMap<String, u32>,
    /// The files that could not be read (an up interface's addresses or routes are then not
    /// known). The IPv6 files count only when they exist (a kernel without IPv6 has none).
    pub unreadable: Vec<String>,
}

/// A connected IPv4 route: (interface, network, mask).
struct Connected {
    iface: String,
    net: u32,
    mask: u32,
}

/// Reads `/proc/net/{route,fib_trie,if_inet6,ipv6_route}` under `proc`.
pub fn read_proc_net(r: &mut Reader, proc: &Path) -> ProcNet {
    let mut out = ProcNet::default();
    let mut connected = Vec::new();
    let read = |r: &mut Reader, out: &mut ProcNet, rel: &str, always: bool| {
        let path = proc.join(rel);
        let text = r.text(&path, Need::Optional);
        if text.is_none() && (always || path.symlink_metadata().is_ok()) {
            out.unreadable.push(path.display().to_string());
        }
        text
    };
    if let Some(text) = read(r, &mut out, "net/route", true) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[0] == "Iface" {
                continue;
            }
            *out.routes.entry(f[0].to_string()).or_default() += 1;
            let (Some(dst), Some(flags), Some(mask)) =
                (hex_u32(f[1]), hex_u32(f[3]), hex_u32(f[7]))
            else {
                r.warn(
                    &proc.join("net/route"),
                    format!("unreadable line `{}`", line.trim_end()),
                );
                continue;
            };
            if flags & RTF_GATEWAY == 0 {
                connected.push(Connected {
                    iface: f[0].to_string(),
                    net: route_ipv4(dst),
                    mask: route_ipv4(mask),
                });
            }
        }
    }
    if let Some(text) = read(r, &mut out, "net/fib_trie", true) {
        for addr in local_ipv4(&text) {
            let a = u32::from(addr);
            if addr.is_loopback() {
                continue;
            }
            let best = connected
                .iter()
                .filter(|c| a & c.mask == c.net & c.mask)
                .max_by_key(|c| c.mask.count_ones());
            if let Some(c) = best {
                out.addresses
                    .entry(c.iface.clone())
                    .or_default()
                    .push(format!("{addr}/{}", c.mask.count_ones()));
            }
        }
    }
    if let Some(text) = read(r, &mut out, "net/if_inet6", false) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                continue;
            }
            let (Ok(raw), Some(plen), Some(scope)) =
                (u128::from_str_radix(f[0], 16), hex_u32(f[2]), hex_u32(f[3]))
            else {
                r.warn(
                    &proc.join("net/if_inet6"),
                    format!("unreadable line `{line}`"),
                );
                continue;
            };
            let addr = Ipv6Addr::from(raw);
            // scope 0x20 = link, 0x10 = host (loopback).
            if scope & 0x30 != 0 || is_link_local(&addr) {
                continue;
            }
            out.addresses
                .entry(f[5].to_string())
                .or_default()
                .push(format!("{addr}/{plen}"));
        }
    }
    if let Some(text) = read(r, &mut out, "net/ipv6_route", false) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Ok(dst), Some(flags)) = (u128::from_str_radix(f[0], 16), hex_u32(f[8])) else {
                r.warn(
                    &proc.join("net/ipv6_route"),
                    format!("unreadable line `{line}`"),
                );
                continue;
            };
            let dst = Ipv6Addr::from(dst);
            if flags & (RTF6_LOCAL | RTF6_CACHE) != 0
                || is_link_local(&dst)
                || dst.segments()[0] & 0xff00 == 0xff00
            {
                continue;
            }
            *out.routes.entry(f[9].to_string()).or_default() += 1;
        }
    }
    for v in out.addresses.values_mut() {
        let set: BTreeSet<String> = v.drain(..).collect();
        v.extend(set);
    }
    out
}

/// A `/proc/net/route` address: the kernel prints the network-order word as a host integer.
fn route_ipv4(v: u32) -> u32 {
    u32::from(Ipv4Addr::from(v.to_ne_bytes()))
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The local addresses of `fib_trie`: a `|-- A.B.C.D` leaf followed by a `/32 host LOCAL`
/// entry. Deduplicated (the trie prints both the main and the local table).
pub fn local_ipv4(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|-- ") {
            leaf = rest.trim().parse().ok();
        } else if t.starts_with("/32 ") && t.ends_with(" LOCAL") && t.contains(" host ") {
            if let Some(a) = leaf {
                out.insert(a);
            }
        } else if !t.starts_with('/') {
            leaf = None;
        }
    }
    out
}

/// Every interface backed by a PCI function: (function, interface).
pub fn scan_interfaces(
    r: &mut Reader,
    class_net: &Path,
    proc_net: &ProcNet,
    only: Option<&BTreeSet<PciAddress>>,
) -> Vec<(PciAddress, NetInterface)> {
    let mut out = Vec::new();
    let mut names: Vec<String> = r
        .list(class_net, Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(dir) = r.resolve(&class_net.join(&name), Need::Required) else {
            continue;
        };
        // Virtual interfaces (lo, bridges, tunnels) have no `device` link.
        let Some(parent) = r.resolve(&dir.join("device"), Need::Optional) else {
            continue;
        };
        let Some(function) = function_above(&parent) else {
            continue;
        };
        if only.is_some_and(|o| !o.contains(&function)) {
            continue;
        }
        let operstate = r.text(&dir.join("operstate"), Need::Optional);
        let flags = r.value(&dir.join("flags"), Need::Optional, "hex flags", hex_u32);
        let up = operstate.as_deref() == Some("up") || flags.is_some_and(|f| f & IFF_UP != 0);
        out.push((
            function,
            NetInterface {
                addresses: proc_net.addresses.get(&name).cloned().unwrap_or_default(),
                routes: proc_net.routes.get(&name).copied().unwrap_or(0),
                name,
                up,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::vm::route_table;

    fn proc_with(files: &[(&str, &str)]) -> (tempfile::TempDir, ProcNet, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("net")).unwrap();
        for (n, t) in files {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        let mut r = Reader::default();
        let p = read_proc_net(&mut r, d.path());
        let w = r.warnings.iter().map(|w| w.message.clone()).collect();
        (d, p, w)
    }

    #[test]
    fn empty_route_file_without_header_is_no_routes() {
        let (_d, p, w) = proc_with(&[("net/route", "")]);
        assert!(p.routes.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn attributes_ipv4_by_connected_route_longest_prefix() {
        let route = route_table(&[
            ("eth0", "00000000", "010200C0", "0003", "00000000"),
            ("eth0", "000200C0", "00000000", "0001", "00FFFFFF"),
            ("eth1", "000010AC", "00000000", "0001", "0000FFFF"),
            ("eth2", "000110AC", "00000000", "0001", "00FFFFFF"),
        ]);
        let trie = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 172.16.1.9\n        /32 host LOCAL\n     |-- 172.16.5.1\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.0.2.255\n        /32 link BROADCAST\n";
        let (_d, p, w) = proc_with(&[("net/route", &route), ("net/fib_trie", trie)]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.routes["eth0"], 2);
        assert_eq!(p.addresses["eth0"], vec!["192.0.2.2/24"]);
        assert_eq!(p.addresses["eth1"], vec!["172.16.5.1/16"]);
        assert_eq!(p.addresses["eth2"], vec!["172.16.1.9/24"]);
        assert!(!p.addresses.contains_key("lo"));
    }

    #[test]
    fn ipv6_skips_link_local_and_counts_real_routes() {
        // Lines as printed on this machine's kernel.
        let if6 = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\nfd000000000000000000000000000002 04 40 00 82     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";
        let r6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\nfe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0\n00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\nfd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0\nff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0\n";
        let (_d, p, w) = proc_with(&[("net/if_inet6", if6), ("net/ipv6_route", r6)]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.addresses["eth0"], vec!["fd00::2/64"]);
        assert!(!p.addresses.contains_key("lo"));
        assert_eq!(p.routes["eth0"], 2);
    }

    #[test]
    fn malformed_lines_are_reported_not_fatal() {
        let (_d, p, w) = proc_with(&[(
            "net/if_inet6",
            "zz 02 40 00 80 eth0\nfd000000000000000000000000000015 02 40 00 80     eth0\n",
        )]);
        assert_eq!(w.len(), 1);
        assert_eq!(p.addresses["eth0"], vec!["fd00::15/64"]);
    }
}
