//! The export module's cases: a desired state, a host (the VM suite's q35 guest as captured
//! from the real kernel), and the spec or elements expected.

use std::path::Path;

use crate::config::{parse_str, Config};
use crate::host::{NodeInfo, Snapshot};
use crate::plan::{self, plan, Plan};

use super::cdi::{self, is_device_name, Spec, CDI_VERSION, KIND};
use super::cdi_dir::{self, Kept};
use super::handout::handout;
use super::libvirt;

fn q35() -> Snapshot {
    let mut s: Snapshot = serde_json::from_str(include_str!(
        "../../tests/fixtures/hosts/vm-q35/expected.json"
    ))
    .expect("the captured VM snapshot parses");
    s.normalize();
    s
}

fn config(text: &str) -> Config {
    match parse_str(text, Path::new("test.toml")) {
        Ok(c) => c,
        Err(d) => panic!(
            "test config invalid: {}",
            d.render(crate::config::Style::Plain)
        ),
    }
}

const EDU: &str = r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
[[user]]
name = 1000
group = 1000
mode = "0660"
devices = ["edu"]
"#;

fn nodes(spec: &Spec, device: &str) -> Vec<(String, u32, u32, u32)> {
    spec.device(device)
        .unwrap_or_else(|| panic!("no device {device} in {}", spec.to_json()))
        .container_edits
        .device_nodes
        .iter()
        .map(|n| (n.path.clone(), n.file_mode, n.uid, n.gid))
        .collect()
}

fn env(spec: &Spec, device: &str) -> Vec<String> {
    spec.device(device)
        .map(|d| d.container_edits.env.clone())
        .unwrap_or_default()
}

fn names(spec: &Spec) -> Vec<&str> {
    spec.devices.iter().map(|d| d.name.as_str()).collect()
}

/// Applies `plan` the way a successful pass would (the pure model of the host afterwards).
fn after(snap: &Snapshot, p: &Plan) -> Snapshot {
    plan::simulate(snap, p)
}

#[test]
fn planned_spec_names_the_entry_and_each_function_with_the_users_node() {
    let c = config(EDU);
    let snap = q35();
    let p = plan(&c, &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    let out = cdi::planned(&c, &snap, &p);
    let spec = &out.spec;
    assert_eq!(spec.cdi_version, CDI_VERSION);
    assert_eq!(spec.kind, KIND);
    assert_eq!(names(spec), ["edu", "0000:00:05.0", "0000:00:05.1"]);
    let want_edu = vec![
        ("/dev/vfio/vfio".to_string(), 0o666, 0, 0),
        ("/dev/vfio/5".to_string(), 0o660, 1000, 1000),
    ];
    assert_eq!(nodes(spec, "edu"), want_edu);
    assert_eq!(nodes(spec, "0000:00:05.1"), want_edu);
    assert_eq!(
        env(spec, "edu"),
        ["VFIOCTL_PCI_ADDRESSES=0000:00:05.0,0000:00:05.1"]
    );
    assert_eq!(
        env(spec, "0000:00:05.0"),
        ["VFIOCTL_PCI_ADDRESSES=0000:00:05.0"]
    );
}

#[test]
fn the_spec_json_uses_the_cdi_field_names_and_no_field_newer_than_0_5_0() {
    let c = config(EDU);
    let snap = q35();
    let json = cdi::planned(&c, &snap, &plan(&c, &snap)).spec.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["cdiVersion"], "0.5.0");
    assert_eq!(v["kind"], "vfioctl.io/device");
    let node = &v["devices"][0]["containerEdits"]["deviceNodes"][1];
    assert_eq!(node["path"], "/dev/vfio/5");
    assert_eq!(node["type"], "c");
    assert_eq!(node["fileMode"], 0o660);
    assert_eq!(node["uid"], 1000);
    assert_eq!(node["gid"], 1000);
    for newer in [
        "annotations",
        "hostPath",
        "intelRdt",
        "additionalGids",
        "netDevices",
    ] {
        assert!(!json.contains(newer), "{newer} in {json}");
    }
    assert!(json.ends_with("}\n"));
}

#[test]
fn without_a_user_the_node_is_root_only_as_the_kernel_makes_it() {
    let c = config(
        r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
"#,
    );
    let snap = q35();
    let spec = cdi::planned(&c, &snap, &plan(&c, &snap)).spec;
    assert_eq!(
        nodes(&spec, "edu")[1],
        ("/dev/vfio/5".to_string(), 0o600, 0, 0)
    );
}

#[test]
fn a_group_that_cannot_be_made_viable_is_not_exported() {
    // e1000 02:01.0 shares group 4 with virtio-net 02:02.0 (on virtio-pci, no consent).
    let c = config(
        r#"
version = 1
[[device]]
name = "nic"
address = "0000:02:01.0"
"#,
    );
    let snap = q35();
    let p = plan(&c, &snap);
    assert!(!p.is_realisable());
    let out = cdi::planned(&c, &snap, &p);
    assert!(out.spec.devices.is_empty(), "{}", out.spec.to_json());
    assert!(
        out.notes.iter().any(|n| n.contains("`nic`")),
        "{:?}",
        out.notes
    );
}

#[test]
fn the_observed_host_gives_the_group_numbers_and_owners_it_has_now() {
    let c = config(EDU);
    let snap = q35();
    let mut host = after(&snap, &plan(&c, &snap));
    // After a reboot or a re-plug the kernel numbered the group 11, and the node is still
    // root's (a pass has not chowned it yet): the spec says what is there.
    for g in &mut host.groups {
        if g.id == 5 {
            g.id = 11;
            g.node = Some(NodeInfo {
                path: "/dev/vfio/11".into(),
                uid: 0,
                gid: 0,
                mode: 0o600,
            });
        }
    }
    for d in &mut host.devices {
        if d.iommu_group == Some(5) {
            d.iommu_group = Some(11);
        }
    }
    host.normalize();
    let spec = cdi::observed(&c, &host, &[]).spec;
    assert_eq!(
        nodes(&spec, "edu")[1],
        ("/dev/vfio/11".to_string(), 0o600, 0, 0)
    );
}

#[test]
fn a_released_device_leaves_the_spec() {
    let c = config(EDU);
    let snap = q35();
    let host = after(&snap, &plan(&c, &snap));
    assert!(!cdi::observed(&c, &host, &[]).spec.devices.is_empty());
    // The entry removed from the config: still on vfio-pci until the pass gives it back, but
    // no longer handed out.
    let empty = config("version = 1\n");
    let out = cdi::observed(&empty, &host, &[]);
    assert!(out.spec.devices.is_empty(), "{}", out.spec.to_json());
}

#[test]
fn a_function_not_on_vfio_is_left_out_and_said_so() {
    let c = config(EDU);
    let snap = q35();
    // Observed before any pass: nothing is on vfio-pci yet.
    let out = cdi::observed(&c, &snap, &[]);
    assert!(out.spec.devices.is_empty());
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("0000:00:05.0 is on no driver")),
        "{:?}",
        out.notes
    );
}

#[test]
fn a_group_a_problem_names_is_left_out() {
    let c = config(EDU);
    let snap = q35();
    let host = after(&snap, &plan(&c, &snap));
    let problem = plan::Problem::new(plan::ProblemKind::OwnerConflict, "two owners").group(5);
    let out = cdi::observed(&c, &host, &[problem]);
    assert!(out.spec.devices.is_empty(), "{}", out.spec.to_json());
}

#[test]
fn domain_members_are_not_exported() {
    let c = config(
        r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
[[domain]]
name = "vm1"
devices = ["edu"]
[[domain.window]]
iova = "0x100000"
size = "1MiB"
"#,
    );
    let snap = q35();
    let p = plan(&c, &snap);
    let out = cdi::planned(&c, &snap, &p);
    assert!(out.spec.devices.is_empty(), "{}", out.spec.to_json());
    assert!(out.notes.iter().any(|n| n.contains("[[domain]] `vm1`")));
}

#[test]
fn a_name_cdi_refuses_is_exported_by_address_only() {
    let c = config(
        r#"
version = 1
[[device]]
name = "edu-"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
"#,
    );
    let snap = q35();
    let out = cdi::planned(&c, &snap, &plan(&c, &snap));
    assert_eq!(names(&out.spec), ["0000:00:05.0", "0000:00:05.1"]);
    assert!(out.notes.iter().any(|n| n.contains("`edu-`")));
}

#[test]
fn device_names_follow_the_cdi_parser() {
    for ok in ["edu", "0000:01:00.0", "a", "gpu_0.x-y", "7"] {
        assert!(is_device_name(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "a.", ":a", "a b", "a/b", "a=b", "ä"] {
        assert!(!is_device_name(bad), "{bad}");
    }
}

#[test]
fn planned_vfs_are_not_exported_before_they_exist() {
    let mut snap = q35();
    // Give the NVMe function an SR-IOV capability so a [[sriov]] entry can create VFs.
    let nvme = "0000:01:00.0".parse().expect("address");
    for d in &mut snap.devices {
        if d.address == nvme {
            d.sriov = Some(crate::host::Sriov {
                total_vfs: 4,
                num_vfs: 0,
                offset: 1,
                stride: 1,
                vf_device: None,
                vfs: Vec::new(),
            });
            d.driver = None;
            d.usage = Default::default();
        }
    }
    let c = config(
        r#"
version = 1
[[sriov]]
pf = "0000:01:00.0"
num_vfs = 1
[[device]]
name = "vf"
address = "0000:01:00.1"
"#,
    );
    let p = plan(&c, &snap);
    assert!(!p.is_empty());
    assert!(p.is_realisable(), "{:?}", p.problems);
    let out = cdi::planned(&c, &snap, &p);
    assert!(out.spec.devices.is_empty(), "{}", out.spec.to_json());
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("`vf` hands out nothing")),
        "{:?}",
        out.notes
    );
}

#[test]
fn the_spec_file_is_written_once_rewritten_on_change_and_removed_when_empty() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run").join("cdi");
    let c = config(EDU);
    let snap = q35();
    let spec = cdi::planned(&c, &snap, &plan(&c, &snap)).spec;
    let file = dir.join(cdi_dir::FILE_NAME);

    assert_eq!(cdi_dir::keep(&dir, &spec).expect("write"), Kept::Written);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&file).expect("written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        spec.to_json()
    );

    assert_eq!(cdi_dir::keep(&dir, &spec).expect("same"), Kept::Unchanged);
    assert_eq!(
        std::fs::metadata(&file).expect("still").ino(),
        meta.ino(),
        "an unchanged spec is not rewritten"
    );

    let mut changed = spec.clone();
    changed.devices.truncate(1);
    assert_eq!(
        cdi_dir::keep(&dir, &changed).expect("change"),
        Kept::Written
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        changed.to_json()
    );

    let mut empty = spec.clone();
    empty.devices.clear();
    assert_eq!(cdi_dir::keep(&dir, &empty).expect("remove"), Kept::Removed);
    assert!(!file.exists());
    assert_eq!(cdi_dir::keep(&dir, &empty).expect("absent"), Kept::Absent);
    assert!(!cdi_dir::remove(&dir).expect("nothing to remove"));
}

#[test]
fn a_directory_where_the_spec_goes_is_an_error_not_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join(cdi_dir::FILE_NAME)).expect("mkdir");
    let c = config(EDU);
    let snap = q35();
    let spec = cdi::planned(&c, &snap, &plan(&c, &snap)).spec;
    let err = cdi_dir::keep(tmp.path(), &spec).expect_err("not a file");
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn refresh_keeps_the_spec_of_the_observed_host() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = config(EDU);
    let snap = q35();
    let host = after(&snap, &plan(&c, &snap));
    let r = super::refresh_cdi(tmp.path(), &c, &host, &Default::default()).expect("kept");
    assert_eq!((r.kept, r.devices), (Kept::Written, 3));
    let r = super::refresh_cdi(tmp.path(), &c, &host, &Default::default()).expect("kept");
    assert_eq!(r.kept, Kept::Unchanged);
    let r = super::refresh_cdi(
        tmp.path(),
        &config("version = 1\n"),
        &host,
        &Default::default(),
    )
    .expect("kept");
    assert_eq!(r.kept, Kept::Removed);
}

#[test]
fn libvirt_elements_name_each_function_unmanaged() {
    let c = config(EDU);
    let snap = q35();
    let p = plan(&c, &snap);
    let h = handout(&c, &super::outcome(&snap, &p), &p.problems);
    let text = libvirt::hostdevs(h.entry("edu").expect("edu handed out"));
    assert_eq!(
        text,
        "<!-- vfioctl [[device]] edu: 0000:00:05.0 -->\n\
         <hostdev mode='subsystem' type='pci' managed='no'>\n  \
         <source>\n    \
         <address domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>\n  \
         </source>\n\
         </hostdev>\n\
         \n\
         <!-- vfioctl [[device]] edu: 0000:00:05.1 -->\n\
         <hostdev mode='subsystem' type='pci' managed='no'>\n  \
         <source>\n    \
         <address domain='0x0000' bus='0x00' slot='0x05' function='0x1'/>\n  \
         </source>\n\
         </hostdev>\n"
    );
}

#[test]
fn libvirt_text_is_escaped_and_comments_stay_comments() {
    assert_eq!(libvirt::escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    let a = "0001:0a:1f.7".parse().expect("address");
    let text = libvirt::hostdev("x--y<z>", a);
    let comment = text.lines().next().expect("comment line");
    let inner = comment
        .strip_prefix("<!--")
        .and_then(|c| c.strip_suffix("-->"))
        .expect("one comment");
    assert!(!inner.contains("--") && !inner.contains('<'), "{comment}");
    assert!(text.contains("<address domain='0x0001' bus='0x0a' slot='0x1f' function='0x7'/>"));
}

/// On a host with iommufd (`/dev/iommu`, device cdevs), `auto` offers the cdev form:
/// `/dev/iommu` and each function's `/dev/vfio/devices/vfioN` with the user's owner and mode;
/// `backend = "legacy"` keeps the group form, byte for byte what a host without iommufd gets.
#[test]
fn an_iommufd_host_gets_the_cdev_form_unless_the_config_says_legacy() {
    let mut snap = q35();
    snap.vfio.iommufd = true;
    snap.vfio.iommufd_node = Some(NodeInfo {
        path: "/dev/iommu".into(),
        uid: 0,
        gid: 0,
        mode: 0o660,
    });
    let c = config(EDU);
    let p = plan(&c, &snap);
    let spec = cdi::planned(&c, &snap, &p).spec;
    let got = nodes(&spec, "edu");
    assert_eq!(got[0], ("/dev/iommu".to_string(), 0o660, 0, 0), "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    for n in &got[1..] {
        assert!(n.0.starts_with("/dev/vfio/devices/vfio"), "{got:?}");
        assert_eq!((n.1, n.2, n.3), (0o660, 1000, 1000), "{got:?}");
    }
    let one = nodes(&spec, "0000:00:05.1");
    assert_eq!(one.len(), 2, "{one:?}");
    assert_eq!(one[0].0, "/dev/iommu");
    assert!(!spec.to_json().contains("/dev/vfio/vfio"));

    let legacy = config(&EDU.replacen("version = 1\n", "version = 1\nbackend = \"legacy\"\n", 1));
    let spec = cdi::planned(&legacy, &snap, &plan(&legacy, &snap)).spec;
    let without = q35();
    let before = cdi::planned(&c, &without, &plan(&c, &without)).spec;
    assert_eq!(spec.to_json(), before.to_json());
}
