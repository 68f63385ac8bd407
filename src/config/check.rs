//! The semantic pass: a [`RawConfig`] (with spans) to the normalised [`Config`], reporting
//! every problem in one run.
//!
//! Owns the meaning of the file: value forms (via `value`), required keys, defaults, and the
//! rules across entries (unique names and addresses, references, one owner per device, one
//! domain per device, window alignment and overlap). Pure: no host is consulted.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use crate::config::diagnostic::{Reporter, Severity};
use crate::config::model::{
    BackendChoice, Config, DeviceSpec, DomainSpec, Origin, Placement, Selector, SriovSpec, UserRef,
    UserSpec, WindowSpec, CONFIG_VERSION, DEFAULT_DRIVER,
};
use crate::config::raw::{Field, RawConfig, RawDevice, RawDomain, RawUser, RawValue, RawWindow};
use crate::config::similar::closest;
use crate::config::value::{self, format_size, Problem};
use crate::pci::{PciAddress, PciClass, PciId};

/// IOMMU mappings are made in (at least) 4 KiB pages.
pub const PAGE: u64 = 4 << 10;
/// Huge-page-backed windows are made of 2 MiB pages.
pub const HUGE_PAGE: u64 = 2 << 20;

/// Where each key was first seen: every "used twice" check in one linear pass (a hash lookup
/// per entry, not a scan of the entries before it).
struct FirstSeen<K> {
    first: HashMap<K, Range<usize>>,
}

impl<K: Eq + std::hash::Hash> FirstSeen<K> {
    fn new() -> Self {
        FirstSeen {
            first: HashMap::new(),
        }
    }

    /// `None` the first time `key` is seen (remembering `span`); after that, where it was
    /// first seen.
    fn repeat(&mut self, key: K, span: Range<usize>) -> Option<Range<usize>> {
        match self.first.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(span);
                None
            }
        }
    }
}

/// The names of the `[[device]]` entries, for references to look up (built once per kind of
/// entry that refers to devices, not once per entry).
fn known_names(devices: &[CheckedDevice]) -> std::collections::HashSet<&str> {
    devices
        .iter()
        .filter_map(|d| d.name.as_ref().map(|(n, _)| n.as_str()))
        .collect()
}

/// Checks `raw`; returns the config when no error was reported (warnings allowed).
pub fn check(raw: &RawConfig, rep: &mut Reporter<'_>) -> Option<Config> {
    let mut c = Checker { rep };
    let version = c.version(raw);
    let devices = c.devices(&raw.device);
    let users = c.users(&raw.user, &devices);
    let sriov = c.sriov(&raw.sriov);
    let backend = c.backend(&raw.backend, "the file-wide default");
    let domains = c.domains(&raw.domain, &devices, backend.unwrap_or_default());
    if c.rep.has_errors() {
        return None;
    }
    Some(Config {
        version: version?,
        devices: devices.into_iter().map(|d| d.spec).collect::<Option<_>>()?,
        users: users.into_iter().collect::<Option<_>>()?,
        sriov: sriov.into_iter().collect::<Option<_>>()?,
        domains: domains.into_iter().collect::<Option<_>>()?,
        backend: backend.ok()?,
    })
}

/// What the cross-entry rules need of a device, even when the entry itself has errors.
struct CheckedDevice {
    name: Option<(String, Range<usize>)>,
    /// The selector, when its own keys are valid (even if other keys of the entry are not).
    selector: Option<Selector>,
    spec: Option<DeviceSpec>,
}

struct Checker<'r, 's> {
    rep: &'r mut Reporter<'s>,
}

/// A value and its span.
type At<'a> = &'a Spanned<RawValue>;

impl Checker<'_, '_> {
    fn origin(&self, span: Range<usize>) -> Origin {
        let l = self.rep.location(span);
        Origin {
            line: l.line,
            column: l.column,
        }
    }

    fn problem(&mut self, span: Range<usize>, p: Problem) {
        self.rep
            .report(Severity::Error, span, p.message, p.hint, Vec::new());
    }

    /// Parses an optional value with `f`; reports its problem at the value.
    fn opt<T>(
        &mut self,
        field: &Field,
        f: impl FnOnce(&RawValue, &str) -> Result<T, Problem>,
    ) -> Result<Option<T>, ()> {
        let Some(v) = field else { return Ok(None) };
        let text = self.rep.text(v.span());
        match f(v.get_ref(), text) {
            Ok(t) => Ok(Some(t)),
            Err(p) => {
                self.problem(v.span(), p);
                Err(())
            }
        }
    }

    /// Parses a required value; a missing one is reported at the entry's header.
    fn req<T>(
        &mut self,
        field: &Field,
        entry: Range<usize>,
        missing: String,
        hint: &str,
        f: impl FnOnce(&RawValue, &str) -> Result<T, Problem>,
    ) -> Option<T> {
        if field.is_none() {
            self.rep.error(entry, missing, hint);
            return None;
        }
        self.opt(field, f).ok().flatten()
    }

    /// The elements of an array value; reports a non-array.
    fn list<'a>(&mut self, v: At<'a>, key: &str, of: &str) -> Option<&'a [Spanned<RawValue>]> {
        match v.get_ref() {
            RawValue::Array(items) => Some(items),
            other => {
                let hint = if let RawValue::String(s) = other {
                    format!("put it in brackets: {key} = [\"{s}\"]")
                } else {
                    format!("write {key} = [ ... ] with {of}")
                };
                self.rep.error(
                    v.span(),
                    format!("{key} must be an array of {of}, found {}", other.kind()),
                    hint,
                );
                None
            }
        }
    }

    fn version(&mut self, raw: &RawConfig) -> Option<u32> {
        let hint = format!("start the file with `version = {CONFIG_VERSION}`");
        let Some(v) = &raw.version else {
            self.rep
                .error(0..0, "the file does not say its `version`", hint);
            return None;
        };
        match v.get_ref() {
            RawValue::Integer(n) if *n == i64::from(CONFIG_VERSION) => Some(CONFIG_VERSION),
            RawValue::Integer(n) => {
                self.rep.error(
                    v.span(),
                    format!("unknown config version {n}"),
                    format!(
                        "this vfioctl reads version {CONFIG_VERSION}; a newer vfioctl may read version {n}"
                    ),
                );
                None
            }
            other => {
                self.rep.error(
                    v.span(),
                    format!("version must be an integer, found {}", other.kind()),
                    hint,
                );
                None
            }
        }
    }

    // ---- [[device]] ----

    fn devices(&mut self, raw: &[Spanned<RawDevice>]) -> Vec<CheckedDevice> {
        let mut out: Vec<CheckedDevice> = Vec::with_capacity(raw.len());
        let mut addresses: HashMap<PciAddress, (String, Range<usize>)> = HashMap::new();
        type IdKey = (PciId, PciId, Option<PciId>, Option<PciId>, Option<PciClass>);
        let mut id_selectors: HashMap<IdKey, (String, Range<usize>)> = HashMap::new();
        let mut names: FirstSeen<String> = FirstSeen::new();
        for entry in raw {
            let d = self.device(entry);
            let label = d.name.as_ref().map_or_else(
                || "this device".to_string(),
                |(n, _)| format!("device `{n}`"),
            );
            if let Some((name, span)) = &d.name {
                if let Some(first) = names.repeat(name.clone(), span.clone()) {
                    self.rep.report(
                        Severity::Error,
                        span.clone(),
                        format!("device name `{name}` is used twice"),
                        Some("names must be unique; rename one of the devices".into()),
                        vec![(first, "first used here".into())],
                    );
                }
            }
            let entry_dev = entry.get_ref();
            let shown = d.name.as_ref().map_or("?", |(n, _)| n.as_str()).to_string();
            if let (Some(Selector::Address(a)), Some(addr_v)) = (&d.selector, &entry_dev.address) {
                let a = *a;
                let written = self.rep.text(addr_v.span()).trim_matches('"');
                if let Some((other, first)) = addresses.get(&a) {
                    let first_text = self.rep.text(first.clone()).trim_matches('"');
                    let canonical = a.to_string();
                    let same = [written, first_text]
                        .into_iter()
                        .find(|t| *t != canonical)
                        .map(|t| format!(" (`{t}` is `{canonical}`)"))
                        .unwrap_or_default();
                    self.rep.report(
                        Severity::Error,
                        addr_v.span(),
                        format!("address {a} is already taken by device `{other}`{same}"),
                        Some("each function is listed once; remove one entry or merge them".into()),
                        vec![(first.clone(), "first listed here".into())],
                    );
                } else {
                    addresses.insert(a, (shown.clone(), addr_v.span()));
                }
            }
            if let Some(Selector::Ids {
                vendor,
                device,
                subsystem_vendor,
                subsystem_device,
                class,
            }) = d.selector.clone()
            {
                let key = (vendor, device, subsystem_vendor, subsystem_device, class);
                let span = entry_dev
                    .vendor
                    .as_ref()
                    .map_or_else(|| entry.span(), |v| v.span());
                if let Some((other, first)) = id_selectors.get(&key) {
                    self.rep.report(
                        Severity::Error,
                        span,
                        format!(
                            "{label} selects the same functions ({vendor}:{device}) as device `{other}`"
                        ),
                        Some("remove one entry, or narrow them with subsystem_vendor/subsystem_device/class".into()),
                        vec![(first.clone(), "first selected here".into())],
                    );
                } else {
                    id_selectors.insert(key, (shown.clone(), span));
                }
            }
            out.push(d);
        }
        out
    }

    fn device(&mut self, entry: &Spanned<RawDevice>) -> CheckedDevice {
        let d = entry.get_ref();
        let head = entry.span();
        let name = self.req(
            &d.name,
            head.clone(),
            "device has no `name`".into(),
            "add a unique name, e.g. name = \"gpu0\"; users and domains refer to it",
            |v, _| value::logical_name("name", v),
        );
        let name_span = d.name.as_ref().map(|n| n.span());
        let label = name
            .as_ref()
            .map_or_else(|| "this device".to_string(), |n| format!("device `{n}`"));
        let mut ok = name.is_some();

        let address = self.opt(&d.address, |v, _| value::address("address", v));
        let vendor = self.opt(&d.vendor, |v, t| value::pci_id("vendor", v, t));
        let device = self.opt(&d.device, |v, t| value::pci_id("device", v, t));
        let ssv = self.opt(&d.subsystem_vendor, |v, t| {
            value::pci_id("subsystem_vendor", v, t)
        });
        let ssd = self.opt(&d.subsystem_device, |v, t| {
            value::pci_id("subsystem_device", v, t)
        });
        let class = self.opt(&d.class, value::pci_class);

        // The selector, from which keys are present (each value is checked on its own above).
        let selector = match (&d.address, &d.vendor, &d.device) {
            (Some(a), Some(v), _) | (Some(a), None, Some(v)) => {
                let key = if d.vendor.is_some() {
                    "vendor"
                } else {
                    "device"
                };
                self.rep.report(
                    Severity::Error,
                    v.span(),
                    format!("{label} is selected both by `address` and by `{key}`"),
                    Some("use `address` for exactly one function, or `vendor` + `device` for every matching function; not both".into()),
                    vec![(a.span(), "address given here".into())],
                );
                None
            }
            (Some(_), None, None) => {
                for (field, key) in [
                    (&d.subsystem_vendor, "subsystem_vendor"),
                    (&d.subsystem_device, "subsystem_device"),
                    (&d.class, "class"),
                ] {
                    if let Some(f) = field {
                        self.rep.error(
                            f.span(),
                            format!("`{key}` narrows a vendor/device selector; {label} is selected by `address`"),
                            "remove it: an address already selects exactly one function",
                        );
                        ok = false;
                    }
                }
                address.ok().flatten().map(Selector::Address)
            }
            (None, Some(v), None) => {
                self.rep.error(
                    v.span(),
                    format!("{label} has `vendor` but no `device`"),
                    "add the device id too, e.g. device = \"2204\" (`lspci -nn` shows [vendor:device])",
                );
                None
            }
            (None, None, Some(v)) => {
                self.rep.error(
                    v.span(),
                    format!("{label} has `device` but no `vendor`"),
                    "add the vendor id too, e.g. vendor = \"10de\" (`lspci -nn` shows [vendor:device])",
                );
                None
            }
            (None, Some(_), Some(_)) => match (vendor, device, ssv, ssd, class) {
                (Ok(Some(vendor)), Ok(Some(device)), Ok(ssv), Ok(ssd), Ok(class)) => {
                    Some(Selector::Ids {
                        vendor,
                        device,
                        subsystem_vendor: ssv,
                        subsystem_device: ssd,
                        class,
                    })
                }
                _ => None,
            },
            (None, None, None) => {
                self.rep.error(
                    name_span.clone().unwrap_or(head.clone()),
                    format!("{label} does not say which function it is"),
                    "add address = \"0000:03:00.0\", or vendor = \"10de\" and device = \"2204\"",
                );
                None
            }
        };
        ok &= selector.is_some();

        let driver = self
            .opt(&d.driver, |v, _| value::driver(v))
            .map(|d| d.unwrap_or_else(|| DEFAULT_DRIVER.to_string()));
        let force = self
            .opt(&d.force, |v, _| value::flag("force", v))
            .map(|f| f.unwrap_or(false));
        let own = match &selector {
            Some(Selector::Address(a)) => Some(*a),
            _ => None,
        };
        let companions = self.companions(&d.companions, own, &label);
        ok &= companions.is_some();

        let spec = match (
            ok,
            name.clone(),
            selector.clone(),
            driver,
            force,
            companions,
        ) {
            (true, Some(name), Some(selector), Ok(driver), Ok(force), Some(companions)) => {
                Some(DeviceSpec {
                    name,
                    selector,
                    driver,
                    companions,
                    force,
                    origin: self.origin(head),
                })
            }
            _ => None,
        };
        // An invalid name (reported above) still identifies the entry for references, so a
        // typo in a name gives one error, not one more per reference.
        let written_name = match d.name.as_ref().map(|n| n.get_ref()) {
            Some(RawValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        CheckedDevice {
            name: name.or(written_name).zip(name_span),
            selector,
            spec,
        }
    }

    fn companions(
        &mut self,
        field: &Field,
        own: Option<PciAddress>,
        label: &str,
    ) -> Option<Vec<PciAddress>> {
        let Some(v) = field else {
            return Some(Vec::new());
        };
        let items = self.list(v, "companions", "PCI addresses")?;
        let mut out: Vec<PciAddress> = Vec::new();
        let mut listed: FirstSeen<PciAddress> = FirstSeen::new();
        let mut ok = true;
        for item in items {
            let a = match value::address("companion", item.get_ref()) {
                Ok(a) => a,
                Err(p) => {
                    self.problem(item.span(), p);
                    ok = false;
                    continue;
                }
            };
            if Some(a) == own {
                self.rep.error(
                    item.span(),
                    format!("companion {a} is {label} itself"),
                    "list only the other functions of its IOMMU group (such as a GPU's audio function)",
                );
                ok = false;
            } else if let Some(first) = listed.repeat(a, item.span()) {
                self.rep.report(
                    Severity::Error,
                    item.span(),
                    format!("companion {a} is listed twice"),
                    Some("remove the repeated address".into()),
                    vec![(first, "first listed here".into())],
                );
                ok = false;
            } else {
                out.push(a);
            }
        }
        ok.then_some(out)
    }

    /// The device names in a `devices = [...]` list; reports unknown and repeated names.
    fn device_refs(
        &mut self,
        field: &Field,
        entry: Range<usize>,
        owner: &str,
        devices: &[CheckedDevice],
        known: &std::collections::HashSet<&str>,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let Some(v) = field else {
            self.rep.error(
                entry,
                format!("{owner} has no `devices`"),
                "add devices = [\"name\", ...] with names of [[device]] entries",
            );
            return None;
        };
        let items = self.list(v, "devices", "device names")?;
        if items.is_empty() {
            self.rep.error(
                v.span(),
                format!("{owner} lists no devices"),
                "add names of [[device]] entries, or remove the entry",
            );
            return None;
        }
        let mut out: Vec<(String, Range<usize>)> = Vec::new();
        let mut listed: FirstSeen<&str> = FirstSeen::new();
        let mut ok = true;
        for item in items {
            let RawValue::String(name) = item.get_ref() else {
                self.rep.error(
                    item.span(),
                    format!(
                        "a device reference must be a name, found {}",
                        item.get_ref().kind()
                    ),
                    "write the `name` of a [[device]] entry in quotes",
                );
                ok = false;
                continue;
            };
            if !known.contains(&name.as_str()) {
                let by_address = name.parse::<PciAddress>().ok().and_then(|a| {
                    devices.iter().find_map(|d| match (&d.selector, &d.name) {
                        (Some(Selector::Address(b)), Some((name, _))) if *b == a => {
                            Some(name.clone())
                        }
                        _ => None,
                    })
                });
                let mut names: Vec<&str> = known.iter().copied().collect();
                names.sort_unstable();
                let hint = match (by_address, closest(name, names.iter().copied())) {
                    (Some(n), _) => {
                        format!("devices are referred to by name: device `{n}` has this address")
                    }
                    (None, Some(s)) => format!("did you mean `{s}`?"),
                    (None, None) if known.is_empty() => {
                        "there are no [[device]] entries; add one with this name".into()
                    }
                    (None, None) => format!("known devices: {}", names.join(", ")),
                };
                self.rep
                    .error(item.span(), format!("unknown device `{name}`"), hint);
                ok = false;
            } else if let Some(first) = listed.repeat(name.as_str(), item.span()) {
                self.rep.report(
                    Severity::Error,
                    item.span(),
                    format!("device `{name}` is listed twice"),
                    Some("remove the repeated name".into()),
                    vec![(first, "first listed here".into())],
                );
                ok = false;
            } else {
                out.push((name.clone(), item.span()));
            }
        }
        ok.then_some(out)
    }

    // ---- [[user]] ----

    fn users(
        &mut self,
        raw: &[Spanned<RawUser>],
        devices: &[CheckedDevice],
    ) -> Vec<Option<UserSpec>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut seen: FirstSeen<UserRef> = FirstSeen::new();
        let mut owners: HashMap<String, (UserRef, Range<usize>)> = HashMap::new();
        let known = known_names(devices);
        for entry in raw {
            let u = entry.get_ref();
            let head = entry.span();
            let user = self.req(
                &u.name,
                head.clone(),
                "user has no `name`".into(),
                "add the unix user, e.g. name = \"alice\" (or a numeric uid)",
                |v, _| value::unix_ref("name", v),
            );
            if let (Some(user), Some(v)) = (&user, &u.name) {
                if let Some(first) = seen.repeat(user.clone(), v.span()) {
                    self.rep.report(
                        Severity::Error,
                        v.span(),
                        format!("user `{user}` has two [[user]] entries"),
                        Some("merge them into one entry".into()),
                        vec![(first, "first entry here".into())],
                    );
                }
            }
            let label = user
                .as_ref()
                .map_or_else(|| "this user".to_string(), |u| format!("user `{u}`"));
            let group = self.opt(&u.group, |v, _| value::unix_ref("group", v));
            let has_group = u.group.is_some();
            let mode = self.opt(&u.mode, value::mode);
            if let (Ok(Some(m)), Some(v)) = (&mode, &u.mode) {
                self.mode_warnings(*m, v.span(), has_group, &label);
            }
            let memlock = self.opt(&u.memlock, |v, _| value::size("memlock", v));
            let refs = self.device_refs(&u.devices, head.clone(), &label, devices, &known);
            if let (Some(refs), Some(user)) = (&refs, &user) {
                for (name, span) in refs {
                    match owners.get(name) {
                        Some((other, first)) if other != user => {
                            self.rep.report(
                                Severity::Error,
                                span.clone(),
                                format!("device `{name}` is already given to user `{other}`"),
                                Some("a VFIO group node has one owner; give other users access through `group`".into()),
                                vec![(first.clone(), "given here".into())],
                            );
                        }
                        _ => {
                            owners.insert(name.clone(), (user.clone(), span.clone()));
                        }
                    }
                }
            }
            out.push(match (user, group, mode, memlock, refs) {
                (Some(user), Ok(group), Ok(mode), Ok(memlock), Some(refs)) => Some(UserSpec {
                    mode: mode.unwrap_or(if group.is_some() { 0o660 } else { 0o600 }),
                    user,
                    group,
                    devices: refs.into_iter().map(|(n, _)| n).collect(),
                    memlock,
                    origin: self.origin(head),
                }),
                _ => None,
            });
        }
        out
    }

    fn mode_warnings(&mut self, mode: u32, span: Range<usize>, has_group: bool, label: &str) {
        if mode & 0o007 != 0 {
            self.rep.warning(
                span.clone(),
                format!("mode {mode:04o} lets every user on the host open these devices"),
                "use \"0600\", or \"0660\" with a `group` for shared access",
            );
        }
        if mode & 0o600 != 0o600 {
            self.rep.warning(
                span.clone(),
                format!("mode {mode:04o} does not let {label} open the devices read-write"),
                "VFIO group nodes are opened read-write; give the owner rw, e.g. \"0600\"",
            );
        }
        if mode & 0o070 != 0 && !has_group {
            self.rep.warning(
                span,
                format!("mode {mode:04o} grants group access, but no `group` is set"),
                "add group = \"kvm\" (for example), or use \"0600\"",
            );
        }
    }

    // ---- [[sriov]] ----

    fn sriov(&mut self, raw: &[Spanned<crate::config::raw::RawSriov>]) -> Vec<Option<SriovSpec>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut seen: FirstSeen<PciAddress> = FirstSeen::new();
        for entry in raw {
            let s = entry.get_ref();
            let head = entry.span();
            let pf = self.req(
                &s.pf,
                head.clone(),
                "[[sriov]] entry has no `pf`".into(),
                "add the physical function's address, e.g. pf = \"0000:05:00.0\"",
                |v, _| value::address("pf", v),
            );
            if let (Some(a), Some(v)) = (pf, &s.pf) {
                if let Some(first) = seen.repeat(a, v.span()) {
                    self.rep.report(
                        Severity::Error,
                        v.span(),
                        format!("physical function {a} has two [[sriov]] entries"),
                        Some("keep one entry with the number of VFs you want".into()),
                        vec![(first, "first entry here".into())],
                    );
                }
            }
            let num_vfs = self.req(
                &s.num_vfs,
                head.clone(),
                "[[sriov]] entry has no `num_vfs`".into(),
                "add num_vfs = N, the number of virtual functions to create",
                |v, _| value::num_vfs(v),
            );
            out.push(match (pf, num_vfs) {
                (Some(pf), Some(num_vfs)) => Some(SriovSpec {
                    pf,
                    num_vfs,
                    origin: self.origin(head),
                }),
                _ => None,
            });
        }
        out
    }

    // ---- backend ----

    /// A `backend` value (top level or `[[domain]]`); absent: `auto`. `Err` when reported.
    fn backend(&mut self, field: &Field, whose: &str) -> Result<BackendChoice, ()> {
        const HINT: &str = "backend is \"auto\" (default: iommufd where /dev/iommu and every member's device cdev exist, else legacy), \"iommufd\" or \"legacy\"";
        self.opt(field, |v, _| match v {
            RawValue::String(s) => [
                BackendChoice::Auto,
                BackendChoice::Iommufd,
                BackendChoice::Legacy,
            ]
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                Problem::new(
                    format!("backend `{s}` of {whose} is not known"),
                    match closest(s, ["auto", "iommufd", "legacy"]) {
                        Some(c) => format!("did you mean \"{c}\"? {HINT}"),
                        None => HINT.to_string(),
                    },
                )
            }),
            other => Err(Problem::new(
                format!(
                    "backend of {whose} must be a string, found {}",
                    other.kind()
                ),
                HINT,
            )),
        })
        .map(Option::unwrap_or_default)
    }

    // ---- [[domain]] ----

    fn domains(
        &mut self,
        raw: &[Spanned<RawDomain>],
        devices: &[CheckedDevice],
        file_backend: BackendChoice,
    ) -> Vec<Option<DomainSpec>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut names: FirstSeen<String> = FirstSeen::new();
        let mut member_of: HashMap<String, (String, Range<usize>)> = HashMap::new();
        let known = known_names(devices);
        for entry in raw {
            let d = entry.get_ref();
            let head = entry.span();
            let name = self.req(
                &d.name,
                head.clone(),
                "domain has no `name`".into(),
                "add a unique name, e.g. name = \"vm1\"",
                |v, _| value::logical_name("name", v),
            );
            if let (Some(n), Some(v)) = (&name, &d.name) {
                if let Some(first) = names.repeat(n.clone(), v.span()) {
                    self.rep.report(
                        Severity::Error,
                        v.span(),
                        format!("domain name `{n}` is used twice"),
                        Some("names must be unique; rename one of the domains".into()),
                        vec![(first, "first used here".into())],
                    );
                }
            }
            let label = name
                .as_ref()
                .map_or_else(|| "this domain".to_string(), |n| format!("domain `{n}`"));
            let refs = self.device_refs(&d.devices, head.clone(), &label, devices, &known);
            if let (Some(refs), Some(dn)) = (&refs, &name) {
                for (dev, span) in refs {
                    if let Some((other, first)) = member_of.get(dev) {
                        self.rep.report(
                            Severity::Error,
                            span.clone(),
                            format!("device `{dev}` is already in domain `{other}`"),
                            Some("a device's IOMMU group can be in one domain only; remove it from one of them".into()),
                            vec![(first.clone(), "first placed here".into())],
                        );
                    } else {
                        member_of.insert(dev.clone(), (dn.clone(), span.clone()));
                    }
                }
            }
            let placement = self.opt(&d.placement, |v, _| match v {
                RawValue::String(s) if s == "shared" => Ok(Placement::Shared),
                RawValue::String(s) if s == "per-group" => Ok(Placement::PerGroup),
                RawValue::String(s) => Err(Problem::new(
                    format!("placement `{s}` is not known"),
                    match closest(s, ["shared", "per-group"]) {
                        Some(c) => format!("did you mean \"{c}\"? placement is \"shared\" (default) or \"per-group\""),
                        None => "placement is \"shared\" (default) or \"per-group\"".into(),
                    },
                )),
                other => Err(Problem::new(
                    format!("placement must be a string, found {}", other.kind()),
                    "placement is \"shared\" (default) or \"per-group\"",
                )),
            });
            let backend = match &d.backend {
                Some(_) => self.backend(&d.backend, &label),
                None => Ok(file_backend),
            };
            let windows = self.windows(&d.window, &label);
            out.push(match (name, refs, placement, backend, windows) {
                (Some(name), Some(refs), Ok(placement), Ok(backend), Some(windows)) => {
                    Some(DomainSpec {
                        name,
                        devices: refs.into_iter().map(|(n, _)| n).collect(),
                        placement: placement.unwrap_or_default(),
                        backend,
                        windows,
                        origin: self.origin(head),
                    })
                }
                _ => None,
            });
        }
        out
    }

    fn windows(&mut self, raw: &[Spanned<RawWindow>], domain: &str) -> Option<Vec<WindowSpec>> {
        let mut out: Vec<(WindowSpec, Range<usize>, String)> = Vec::new();
        let mut names: FirstSeen<String> = FirstSeen::new();
        let mut ok = true;
        for (i, entry) in raw.iter().enumerate() {
            let w = entry.get_ref();
            let head = entry.span();
            let name = self.opt(&w.name, |v, _| value::logical_name("name", v));
            if let (Ok(Some(n)), Some(v)) = (&name, &w.name) {
                if let Some(first) = names.repeat(n.clone(), v.span()) {
                    self.rep.report(
                        Severity::Error,
                        v.span(),
                        format!("window name `{n}` is used twice in {domain}"),
                        Some("window names must be unique within a domain".into()),
                        vec![(first, "first used here".into())],
                    );
                    ok = false;
                }
            }
            let label = match &name {
                Ok(Some(n)) => format!("window `{n}`"),
                _ => format!("window {}", i + 1),
            };
            let full = format!("{label} of {domain}");
            let iova = self.req(
                &w.iova,
                head.clone(),
                format!("{full} has no `iova`"),
                "add the start address, e.g. iova = \"0x100000000\"",
                |v, _| value::iova(v),
            );
            let size = self.req(
                &w.size,
                head.clone(),
                format!("{full} has no `size`"),
                "add the length, e.g. size = \"1GiB\"",
                |v, _| value::size("size", v),
            );
            let hugepages = self.opt(&w.hugepages, |v, _| value::flag("hugepages", v));
            let (Some(iova), Some(size), Some(iova_v), Some(size_v), Ok(hugepages), Ok(name)) =
                (iova, size, &w.iova, &w.size, hugepages, name)
            else {
                ok = false;
                continue;
            };
            let hugepages = hugepages.unwrap_or(false);
            if !self.window_shape(iova, size, hugepages, iova_v.span(), size_v.span(), &full) {
                ok = false;
                continue;
            }
            out.push((
                WindowSpec {
                    name,
                    iova,
                    size,
                    hugepages,
                    origin: self.origin(head),
                },
                iova_v.span(),
                label,
            ));
        }
        // Overlaps, reported at the later window (in file order) of each overlapping pair.
        for (j, (b, b_span, b_label)) in out.iter().enumerate() {
            for (a, a_span, a_label) in &out[..j] {
                if a.iova < b.end() && b.iova < a.end() {
                    self.rep.report(
                        Severity::Error,
                        b_span.clone(),
                        format!(
                            "{b_label} [{:#x}, {:#x}) overlaps {a_label} [{:#x}, {:#x}) in {domain}",
                            b.iova,
                            b.end(),
                            a.iova,
                            a.end()
                        ),
                        Some(format!(
                            "windows of one domain must not overlap; start it at {:#x} or later, or shrink {a_label}",
                            a.end()
                        )),
                        vec![(a_span.clone(), format!("{a_label} starts here"))],
                    );
                    ok = false;
                }
            }
        }
        ok.then(|| out.into_iter().map(|(w, _, _)| w).collect())
    }

    /// Size, alignment and overflow of one window; reports at the offending value.
    fn window_shape(
        &mut self,
        iova: u64,
        size: u64,
        hugepages: bool,
        iova_span: Range<usize>,
        size_span: Range<usize>,
        label: &str,
    ) -> bool {
        let mut ok = true;
        if size == 0 {
            self.rep.error(
                size_span.clone(),
                format!("{label} has size 0"),
                "a window maps at least one 4 KiB page; give a size such as \"1GiB\"",
            );
            return false;
        }
        let (align, unit) = if hugepages {
            (HUGE_PAGE, "2 MiB (hugepages = true)")
        } else {
            (PAGE, "4 KiB")
        };
        if iova % align != 0 {
            let down = iova - iova % align;
            let up = down.checked_add(align);
            let hint = match up {
                Some(up) => format!("round it down to \"{down:#x}\" or up to \"{up:#x}\""),
                None => format!("round it down to \"{down:#x}\""),
            };
            self.rep.error(
                iova_span.clone(),
                format!("{label}: iova {iova:#x} is not aligned to {unit}"),
                hint,
            );
            ok = false;
        }
        if size % align != 0 {
            let down = size - size % align;
            let hint = match size.checked_add(align - size % align) {
                Some(up) if down > 0 => format!(
                    "round it up to \"{}\" or down to \"{}\"",
                    format_size(up),
                    format_size(down)
                ),
                Some(up) => format!("round it up to \"{}\"", format_size(up)),
                None => format!("round it down to \"{}\"", format_size(down)),
            };
            self.rep.error(
                size_span.clone(),
                format!(
                    "{label}: size {} is not a multiple of {unit}",
                    format_size(size)
                ),
                hint,
            );
            ok = false;
        }
        if iova.checked_add(size).is_none() {
            self.rep.report(
                Severity::Error,
                size_span,
                format!(
                    "{label}: iova {iova:#x} + size {} runs past the end of the 64-bit IOVA space",
                    format_size(size)
                ),
                Some(format!(
                    "the window must end at or below 0xffffffffffffffff; at this iova the size can be at most {}",
                    format_size(u64::MAX - iova + 1 - ((u64::MAX - iova + 1) % PAGE))
                )),
                vec![(iova_span, "starting here".into())],
            );
            ok = false;
        }
        ok
    }
}

#[cfg(test)]
mod scale_tests {
    use std::fmt::Write;
    use std::path::Path;

    /// A config with `n` devices at distinct addresses, the last one reusing the first's name,
    /// and a user listing every device, the first twice.
    pub(crate) fn large(n: usize) -> String {
        let mut s = String::from("version = 1\n");
        let addr = |i: usize| format!("0000:{:02x}:{:02x}.{}", 1 + i / 256, (i % 256) / 8, i % 8);
        for i in 0..n {
            let name = if i + 1 == n {
                "dev0".to_string()
            } else {
                format!("dev{i}")
            };
            writeln!(
                s,
                "[[device]]\nname = \"{name}\"\naddress = \"{}\"",
                addr(i)
            )
            .unwrap();
        }
        s.push_str("[[user]]\nname = \"1000\"\ndevices = [\"dev0\"");
        for i in 0..n - 1 {
            write!(s, ", \"dev{i}\"").unwrap();
        }
        s.push_str("]\n");
        s
    }

    // 40,000 devices (3 s with the former pairwise checks; the time is in benches/check.rs):
    // the repeated names are found, once each, pointing at the first use.
    #[test]
    fn duplicate_checks_on_forty_thousand_devices_find_each_repeat_once() {
        let n = 40_000;
        let text = large(n);
        let checked = crate::config::check_str(&text, Path::new("big.toml"));
        let errors: Vec<String> = checked
            .diagnostics
            .items()
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.message.clone())
            .collect();
        assert_eq!(
            errors,
            [
                "device name `dev0` is used twice".to_string(),
                "device `dev0` is listed twice".to_string(),
            ],
        );
        assert!(checked.config.is_none());
    }
}
