//! The semantic pass end to end: every rule reports at the exact value, all problems are
//! reported in one run, and the rendered text is stable (insta snapshots).

use std::path::Path;

use vfioctl::config::{check_str, parse_str, Severity, Style};

/// Ten different mistakes, one per numbered comment.
const TEN_MISTAKES: &str = r#"version = 1

[[device]]
name = "gpu"
address = "0000:03:00"            # 1: malformed address

[[device]]
name = "nic"
address = "04:00.0"
vendor = "8086"                   # 2: both address and vendor/device

[[device]]
name = "nic"                      # 3: duplicate name
address = "0000:05:00.0"
driver = "nvidia"                 # 4: not a vfio driver

[[user]]
name = "alice"
mode = "0999"                     # 5: not octal
devices = ["gpu", "nci"]          # 6: unknown device
memlock = "1GB"                   # 7: not an IEC unit

[[domain]]
name = "vm1"
devices = ["gpu"]
[[domain.window]]
iova = "0x1001"                   # 8: not 4 KiB aligned
size = "1GiB"
[[domain.window]]
iova = "0x100000000"
size = 0                          # 9: zero size

[[domain]]
name = "vm2"
devices = ["gpu"]                 # 10: device already in vm1
"#;

/// (line, column, severity, message) of every diagnostic.
fn located(source: &str) -> Vec<(usize, usize, Severity, String)> {
    let checked = check_str(source, Path::new("test.toml"));
    checked
        .diagnostics
        .items()
        .iter()
        .map(|d| {
            let l = d.location.as_ref().expect("located");
            (l.line, l.column, d.severity, d.message.clone())
        })
        .collect()
}

#[test]
fn ten_mistakes_give_ten_located_diagnostics() {
    let found = located(TEN_MISTAKES);
    let positions: Vec<(usize, usize)> = found.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(
        positions,
        vec![
            (5, 11),
            (10, 10),
            (13, 8),
            (15, 10),
            (19, 8),
            (20, 19),
            (21, 11),
            (27, 8),
            (31, 8),
            (35, 12),
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(|f| f.2 == Severity::Error));
    let messages: Vec<&str> = found.iter().map(|f| f.3.as_str()).collect();
    for (i, want) in [
        "is not a PCI address",
        "selected both by `address` and by `vendor`",
        "device name `nic` is used twice",
        "driver `nvidia` is not a vfio driver",
        "mode `0999` is not an octal permission mode",
        "unknown device `nci`",
        "not an IEC unit",
        "is not aligned to 4 KiB",
        "has size 0",
        "device `gpu` is already in domain `vm1`",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            messages[i].contains(want),
            "#{}: {:?} lacks {want:?}",
            i + 1,
            messages[i]
        );
    }
    // Every underline covers exactly the offending value.
    let d = check_str(TEN_MISTAKES, Path::new("test.toml")).diagnostics;
    let texts: Vec<&str> = d
        .items()
        .iter()
        .map(|d| &TEN_MISTAKES[d.location.as_ref().unwrap().span.range()])
        .collect();
    assert_eq!(
        texts,
        vec![
            "\"0000:03:00\"",
            "\"8086\"",
            "\"nic\"",
            "\"nvidia\"",
            "\"0999\"",
            "\"nci\"",
            "\"1GB\"",
            "\"0x1001\"",
            "0",
            "\"gpu\""
        ]
    );
    assert!(
        d.items().iter().all(|d| d.hint.is_some()),
        "every diagnostic has a hint"
    );
}

#[test]
fn ten_mistakes_render_like_rustc() {
    let d = check_str(TEN_MISTAKES, Path::new("ten-mistakes.toml")).diagnostics;
    insta::assert_snapshot!("ten_mistakes_text", d.render(Style::Plain));
}

#[test]
fn ten_mistakes_as_json() {
    let d = check_str(TEN_MISTAKES, Path::new("ten-mistakes.toml")).diagnostics;
    insta::assert_json_snapshot!("ten_mistakes_json", d.to_json());
}

/// One small config per rule: (what, config, line, column, message fragment, hint fragment).
const RULES: &[(&str, &str, usize, usize, &str, &str)] = &[
    (
        "missing version",
        "[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n",
        1,
        1,
        "does not say its `version`",
        "version = 1",
    ),
    (
        "unknown version",
        "version = 2\n",
        1,
        11,
        "unknown config version 2",
        "reads version 1",
    ),
    (
        "version as string",
        "version = \"1\"\n",
        1,
        11,
        "version must be an integer, found a string",
        "version = 1",
    ),
    (
        "TOML syntax",
        "version = 1\n[[device]\n",
        2,
        10,
        "",
        "TOML syntax",
    ),
    (
        "unknown key",
        "version = 1\n[[device]]\nname = \"a\"\nadress = \"01:00.0\"\n",
        4,
        1,
        "unknown key `adress` in [[device]]",
        "did you mean `address`?",
    ),
    (
        "single brackets",
        "version = 1\n[user]\nname = \"a\"\n",
        2,
        1,
        "expected a sequence",
        "[[user]]",
    ),
    (
        "duplicate address in short form",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"0000:01:00.0\"\n\
         [[device]]\nname = \"b\"\naddress = \"01:00.0\"\n",
        7,
        11,
        "already taken by device `a` (`01:00.0` is `0000:01:00.0`)",
        "listed once",
    ),
    (
        "same id selector twice",
        "version = 1\n[[device]]\nname = \"a\"\nvendor = \"8086\"\ndevice = \"1889\"\n\
         [[device]]\nname = \"b\"\nvendor = \"0x8086\"\ndevice = \"1889\"\n",
        8,
        10,
        "selects the same functions (8086:1889) as device `a`",
        "narrow them",
    ),
    (
        "no selector",
        "version = 1\n[[device]]\nname = \"a\"\n",
        3,
        8,
        "does not say which function it is",
        "address = ",
    ),
    (
        "vendor without device",
        "version = 1\n[[device]]\nname = \"a\"\nvendor = \"10de\"\n",
        4,
        10,
        "has `vendor` but no `device`",
        "lspci -nn",
    ),
    (
        "bad hex id",
        "version = 1\n[[device]]\nname = \"a\"\nvendor = \"10dx\"\ndevice = \"2204\"\n",
        4,
        10,
        "vendor `10dx` is not a PCI id",
        "4 hex digits",
    ),
    (
        "id as integer",
        "version = 1\n[[device]]\nname = \"a\"\nvendor = 0x10de\ndevice = \"2204\"\n",
        4,
        10,
        "found an integer",
        "vendor = \"10de\"",
    ),
    (
        "class with address",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\nclass = \"030000\"\n",
        5,
        9,
        "`class` narrows a vendor/device selector",
        "remove it",
    ),
    (
        "companion is the device",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         companions = [\"0000:01:00.1\", \"01:00.0\"]\n",
        5,
        31,
        "companion 0000:01:00.0 is device `a` itself",
        "other functions",
    ),
    (
        "bad device name",
        "version = 1\n[[device]]\nname = \"my gpu\"\naddress = \"01:00.0\"\n",
        3,
        8,
        "name `my gpu` is not a valid name",
        "letters, digits",
    ),
    (
        "user name not a unix name",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[user]]\nname = \"Alice Smith\"\ndevices = [\"a\"]\n",
        6,
        8,
        "not a valid unix name",
        "numeric id",
    ),
    (
        "mode above 0777",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[user]]\nname = \"alice\"\nmode = \"4755\"\ndevices = [\"a\"]\n",
        7,
        8,
        "above 0777",
        "at most \"0777\"",
    ),
    (
        "mode as decimal integer",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[user]]\nname = \"alice\"\nmode = 660\ndevices = [\"a\"]\n",
        7,
        8,
        "decimal integer",
        "mode = \"0660\"",
    ),
    (
        "duplicate user",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[device]]\nname = \"b\"\naddress = \"02:00.0\"\n\
         [[user]]\nname = \"alice\"\ndevices = [\"a\"]\n[[user]]\nname = \"alice\"\ndevices = [\"b\"]\n",
        12,
        8,
        "user `alice` has two [[user]] entries",
        "merge",
    ),
    (
        "device given to two users",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[user]]\nname = \"alice\"\ndevices = [\"a\"]\n[[user]]\nname = 1001\ndevices = [\"a\"]\n",
        10,
        12,
        "device `a` is already given to user `alice`",
        "one owner",
    ),
    (
        "device referenced by address",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[user]]\nname = \"alice\"\ndevices = [\"0000:01:00.0\"]\n",
        7,
        12,
        "unknown device `0000:01:00.0`",
        "device `a` has this address",
    ),
    (
        "duplicate pf",
        "version = 1\n[[sriov]]\npf = \"05:00.0\"\nnum_vfs = 4\n[[sriov]]\npf = \"0000:05:00.0\"\nnum_vfs = 2\n",
        6,
        6,
        "physical function 0000:05:00.0 has two [[sriov]] entries",
        "keep one",
    ),
    (
        "num_vfs out of range",
        "version = 1\n[[sriov]]\npf = \"05:00.0\"\nnum_vfs = -1\n",
        4,
        11,
        "num_vfs -1 is out of range",
        "0 to 65535",
    ),
    (
        "duplicate domain",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[device]]\nname = \"b\"\naddress = \"02:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n[[domain]]\nname = \"d\"\ndevices = [\"b\"]\n",
        12,
        8,
        "domain name `d` is used twice",
        "unique",
    ),
    (
        "bad placement",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\nplacement = \"per_group\"\n",
        8,
        13,
        "placement `per_group` is not known",
        "did you mean \"per-group\"?",
    ),
    (
        "misaligned size",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n[[domain.window]]\niova = 0\nsize = 5000\n",
        10,
        8,
        "size 5000 is not a multiple of 4 KiB",
        "round it up to \"8KiB\" or down to \"4KiB\"",
    ),
    (
        "hugepage alignment",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n[[domain.window]]\niova = \"0x1000\"\nsize = \"2MiB\"\nhugepages = true\n",
        9,
        8,
        "iova 0x1000 is not aligned to 2 MiB",
        "\"0x200000\"",
    ),
    (
        "overlapping windows",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n\
         [[domain.window]]\nname = \"low\"\niova = 0\nsize = \"1GiB\"\n\
         [[domain.window]]\nname = \"mid\"\niova = \"0x20000000\"\nsize = \"1GiB\"\n",
        14,
        8,
        "window `mid` [0x20000000, 0x60000000) overlaps window `low` [0x0, 0x40000000)",
        "start it at 0x40000000 or later",
    ),
    (
        "iova + size overflow",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n\
         [[domain.window]]\niova = \"0xfffffffffff00000\"\nsize = \"2MiB\"\n",
        10,
        8,
        "runs past the end of the 64-bit IOVA space",
        "at most 1MiB",
    ),
    (
        "iova as size string",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n[[domain.window]]\niova = \"4GiB\"\nsize = \"1GiB\"\n",
        9,
        8,
        "iova `4GiB` is written as a size",
        "\"0x100000000\"",
    ),
    (
        "window without size",
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
         [[domain]]\nname = \"d\"\ndevices = [\"a\"]\n[[domain.window]]\niova = 0\n",
        8,
        1,
        "window 1 of domain `d` has no `size`",
        "size = \"1GiB\"",
    ),
];

#[test]
fn every_rule_points_at_the_value_with_a_hint() {
    for (what, src, line, column, message, hint) in RULES {
        let d = check_str(src, Path::new("t.toml")).diagnostics;
        let Some(first) = d
            .items()
            .iter()
            .find(|d| d.severity == Severity::Error && d.message.contains(message))
        else {
            panic!("{what}: no error containing {message:?} in\n{d}");
        };
        let loc = first.location.as_ref().expect("located");
        assert_eq!(
            (loc.line, loc.column),
            (*line, *column),
            "{what}: {}",
            first.message
        );
        assert!(
            first.message.contains(message),
            "{what}: message {:?} lacks {message:?}",
            first.message
        );
        let h = first.hint.as_deref().unwrap_or("");
        assert!(h.contains(hint), "{what}: hint {h:?} lacks {hint:?}");
        assert!(
            parse_str(src, Path::new("t.toml")).is_err(),
            "{what}: config accepted"
        );
    }
}

#[test]
fn warnings_do_not_make_a_config_invalid() {
    let src = "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
               [[user]]\nname = \"alice\"\nmode = \"0666\"\ndevices = [\"a\"]\n";
    let checked = check_str(src, Path::new("t.toml"));
    let config = checked.config.expect("valid with warnings");
    assert_eq!(config.users[0].mode, 0o666);
    let d = &checked.diagnostics;
    assert_eq!(d.error_count(), 0);
    assert_eq!(d.warning_count(), 2, "{d}");
    let first = &d.items()[0];
    assert!(first.message.contains("every user on the host"));
    assert_eq!(first.location.as_ref().unwrap().line, 7);
    insta::assert_snapshot!("mode_warnings_text", d.render(Style::Plain));
}

#[test]
fn a_config_maps_into_the_model() {
    use vfioctl::config::{Placement, Selector, UserRef};
    use vfioctl::pci::{PciAddress, PciId};
    let src = r#"version = 1
[[device]]
name = "gpu"
address = "0b:00.0"
companions = ["0b:00.1"]
force = true
[[device]]
name = "vfs"
vendor = "8086"
device = "1889"
subsystem_vendor = "8086"
class = "020000"
driver = "ice_vfio_pci"
[[user]]
name = "1000"
group = "kvm"
devices = ["gpu"]
memlock = "1GiB"
[[user]]
name = "dpdk"
devices = ["vfs"]
[[sriov]]
pf = "3b:00.0"
num_vfs = 8
[[domain]]
name = "vm"
devices = ["gpu", "vfs"]
placement = "per-group"
[[domain.window]]
iova = 0
size = "2GiB"
hugepages = true
[[domain.window]]
name = "high"
iova = "0x1_0000_0000"
size = 4096
"#;
    let c = parse_str(src, Path::new("t.toml")).expect("valid");
    assert_eq!(c.version, 1);
    let gpu = c.device("gpu").unwrap();
    assert_eq!(
        gpu.selector,
        Selector::Address(PciAddress::new(0, 0x0b, 0, 0))
    );
    assert_eq!(gpu.companions, vec![PciAddress::new(0, 0x0b, 0, 1)]);
    assert_eq!(gpu.driver, "vfio-pci");
    assert!(gpu.force);
    assert_eq!((gpu.origin.line, gpu.origin.column), (2, 1));
    let vfs = c.device("vfs").unwrap();
    assert_eq!(
        vfs.selector,
        Selector::Ids {
            vendor: PciId(0x8086),
            device: PciId(0x1889),
            subsystem_vendor: Some(PciId(0x8086)),
            subsystem_device: None,
            class: Some(vfioctl::pci::PciClass(0x020000)),
        }
    );
    assert_eq!(vfs.driver, "ice_vfio_pci");
    assert!(!vfs.force);
    assert_eq!(c.users[0].user, UserRef::Uid(1000));
    assert_eq!(c.users[0].group, Some(UserRef::Name("kvm".into())));
    assert_eq!(c.users[0].mode, 0o660, "default with a group");
    assert_eq!(c.users[0].memlock, Some(1 << 30));
    assert_eq!(c.users[1].mode, 0o600, "default without a group");
    assert_eq!(c.users[1].memlock, None);
    assert_eq!(c.sriov[0].pf, PciAddress::new(0, 0x3b, 0, 0));
    assert_eq!(c.sriov[0].num_vfs, 8);
    let d = &c.domains[0];
    assert_eq!(d.placement, Placement::PerGroup);
    assert_eq!(d.devices, vec!["gpu", "vfs"]);
    assert_eq!(d.windows.len(), 2);
    assert_eq!((d.windows[0].iova, d.windows[0].size), (0, 2 << 30));
    assert!(d.windows[0].hugepages);
    assert_eq!(d.windows[0].name, None);
    assert_eq!(d.windows[1].name.as_deref(), Some("high"));
    assert_eq!(
        (d.windows[1].iova, d.windows[1].end()),
        (1 << 32, (1 << 32) + 4096)
    );
    assert_eq!(
        (d.windows[1].origin.line, d.windows[1].origin.column),
        (33, 1)
    );
}

#[test]
fn a_bad_device_name_is_reported_once() {
    let src = "version = 1\n[[device]]\nname = \"my gpu\"\naddress = \"01:00.0\"\n\
               [[user]]\nname = \"alice\"\ndevices = [\"my gpu\"]\n";
    let found = located(src);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].0, found[0].1), (3, 8));
}

#[test]
fn an_empty_config_is_valid() {
    let c = parse_str("version = 1\n", Path::new("t.toml")).unwrap();
    assert!(
        c.devices.is_empty() && c.users.is_empty() && c.sriov.is_empty() && c.domains.is_empty()
    );
}
