//! PCI identity: function addresses (`0000:03:00.0`), vendor/device ids and class codes.
//!
//! Owns parsing and normalising these values and their serialised forms; every other module
//! uses these types rather than strings, so an address is validated exactly once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PCI function address: domain, bus, device (slot), function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a PCI address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("expected a PCI address like `0000:03:00.0` or `03:00.0`")]
    Shape,
    #[error("`{0}` is not a hexadecimal number")]
    NotHex(String),
    #[error("domain `{0}` is out of range (at most ffff)")]
    Domain(String),
    #[error("bus `{0}` is out of range (at most ff)")]
    Bus(String),
    #[error("device `{0}` is out of range (at most 1f)")]
    Device(String),
    #[error("function `{0}` is out of range (at most 7)")]
    Function(String),
}

fn hex_field(s: &str, max_len: usize) -> Result<u32, AddressError> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::NotHex(s.to_string()));
    }
    u32::from_str_radix(s, 16).map_err(|_| AddressError::NotHex(s.to_string()))
}

impl PciAddress {
    pub const fn new(domain: u32, bus: u8, device: u8, function: u8) -> Self {
        PciAddress {
            domain,
            bus,
            device,
            function,
        }
    }

    /// The PCI routing id (bus << 8 | devfn), used for SR-IOV VF arithmetic.
    pub fn routing_id(&self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }

    /// The address with routing id `rid` in the same domain.
    pub fn from_routing_id(domain: u32, rid: u16) -> Self {
        PciAddress {
            domain,
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 0x7) as u8,
        }
    }

    /// The other functions' slot: same domain, bus and device.
    pub fn same_slot(&self, other: &PciAddress) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.device == other.device
    }
}

impl FromStr for PciAddress {
    type Err = AddressError;

    /// Accepts `DDDD:BB:SS.F` and the short form `BB:SS.F` (domain 0).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (rest, func) = s.rsplit_once('.').ok_or(AddressError::Shape)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0", *b, *s),
            _ => return Err(AddressError::Shape),
        };
        let domain = hex_field(dom, 4).map_err(|e| match e {
            AddressError::NotHex(_) if dom.len() > 4 => AddressError::Domain(dom.to_string()),
            e => e,
        })?;
        let bus_v = hex_field(bus, 2).map_err(|e| match e {
            AddressError::NotHex(_) if bus.len() > 2 => AddressError::Bus(bus.to_string()),
            e => e,
        })?;
        let dev_v = hex_field(dev, 2)?;
        if dev_v > 0x1f {
            return Err(AddressError::Device(dev.to_string()));
        }
        let fn_v = hex_field(func, 1)?;
        if fn_v > 7 {
            return Err(AddressError::Function(func.to_string()));
        }
        Ok(PciAddress {
            domain,
            bus: bus_v as u8,
            device: dev_v as u8,
            function: fn_v as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 16-bit PCI id (vendor, device, subsystem), written as 4 lowercase hex digits (`"8086"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciId(pub u16);

impl PciId {
    /// Parses `8086`, `0x8086` (any case).
    pub fn parse(s: &str) -> Option<PciId> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(t, 16).ok().map(PciId)
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

impl Serialize for PciId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PciId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad PCI id `{s}`")))
    }
}

/// A function's `driver_override` as sysfs shows it: the driver name, or `None` when unset
/// (the kernel reads back `(null)`; a clearing write leaves it empty). The one parser of it.
pub fn parse_driver_override(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty() && t != "(null)").then(|| t.to_string())
}

/// The ids a function shows in sysfs, as far as a config selector looks at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionIds {
    pub vendor: PciId,
    pub device: PciId,
    pub subsystem_vendor: Option<PciId>,
    pub subsystem_device: Option<PciId>,
    pub class: Option<PciClass>,
}

/// A 24-bit PCI class code (class, subclass, prog-if), written as 6 hex digits (`"020000"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciClass(pub u32);

impl PciClass {
    pub fn parse(s: &str) -> Option<PciClass> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if t.is_empty() || t.len() > 6 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(t, 16).ok().map(PciClass)
    }

    /// Base class and subclass (`0x0604` for a PCI bridge).
    pub fn base_sub(&self) -> u16 {
        (self.0 >> 8) as u16
    }

    /// PCI-to-PCI bridges (0x0604) and CardBus/semi-transparent bridges (0x0609): header type 1.
    pub fn is_bridge(&self) -> bool {
        matches!(self.base_sub(), 0x0604 | 0x0609)
    }

    /// A display controller of VGA class (0x0300).
    /// A mass storage controller (class 0x01: NVMe, SATA, SCSI, virtio-blk).
    pub fn is_storage(&self) -> bool {
        self.0 >> 16 == 0x01
    }

    pub fn is_vga(&self) -> bool {
        self.base_sub() == 0x0300
    }

    /// A short human name for the class, as `lspci` would say it.
    pub fn name(&self) -> &'static str {
        // Exact base+subclass names first, then the base class alone.
        const EXACT: &[(u16, &str)] = &[
            (0x00ff, "Unclassified device"),
            (0x0100, "SCSI controller"),
            (0x0101, "IDE controller"),
            (0x0106, "SATA controller"),
            (0x0107, "SAS controller"),
            (0x0108, "NVMe controller"),
            (0x0200, "Ethernet controller"),
            (0x0207, "InfiniBand controller"),
            (0x0300, "VGA controller"),
            (0x0302, "3D controller"),
            (0x0401, "Audio device"),
            (0x0403, "Audio device"),
            (0x0600, "Host bridge"),
            (0x0601, "ISA bridge"),
            (0x0604, "PCI bridge"),
            (0x0609, "PCI bridge (semi-transparent)"),
            (0x0c03, "USB controller"),
            (0x0c05, "SMBus"),
        ];
        const BASE: &[(u8, &str)] = &[
            (0x00, "Unclassified device"),
            (0x01, "Storage controller"),
            (0x02, "Network controller"),
            (0x03, "Display controller"),
            (0x04, "Multimedia controller"),
            (0x05, "Memory controller"),
            (0x06, "Bridge"),
            (0x07, "Communication controller"),
            (0x08, "System peripheral"),
            (0x0b, "Processor"),
            (0x0c, "Serial bus controller"),
            (0x12, "Processing accelerator"),
            (0xff, "Unassigned class"),
        ];
        let bs = self.base_sub();
        if let Some((_, n)) = EXACT.iter().find(|(c, _)| *c == bs) {
            return n;
        }
        let base = (bs >> 8) as u8;
        BASE.iter()
            .find(|(c, _)| *c == base)
            .map(|(_, n)| *n)
            .unwrap_or("Device")
    }
}

impl fmt::Display for PciClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06x}", self.0)
    }
}

impl Serialize for PciClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciClass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PciClass::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad PCI class `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn driver_override_reads_null_and_empty_as_unset() {
        assert_eq!(parse_driver_override("(null)\n"), None);
        assert_eq!(parse_driver_override("\n"), None);
        assert_eq!(
            parse_driver_override("vfio-pci\n").as_deref(),
            Some("vfio-pci")
        );
    }

    use super::*;

    #[test]
    fn parses_full_and_short_addresses() {
        let a: PciAddress = "0000:03:00.1".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 3, 0, 1));
        let b: PciAddress = "03:00.1".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(b.to_string(), "0000:03:00.1");
        let c: PciAddress = "ABCD:FF:1f.7".parse().unwrap();
        assert_eq!(c.to_string(), "abcd:ff:1f.7");
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "03:00",
            "0000:03:20.0",
            "0000:03:00.8",
            "00000:03:00.0",
            "0000:003:00.0",
            "zz:00.0",
            "0000:03:00.0.1",
            "1:2:3:4.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn routing_id_round_trips() {
        let a: PciAddress = "0000:05:10.3".parse().unwrap();
        assert_eq!(PciAddress::from_routing_id(0, a.routing_id()), a);
        // VF arithmetic: offset 0x80, stride 2 from 05:00.0.
        let pf: PciAddress = "0000:05:00.0".parse().unwrap();
        let vf1 = PciAddress::from_routing_id(0, pf.routing_id() + 0x80 + 2);
        assert_eq!(vf1.to_string(), "0000:05:10.2");
    }

    #[test]
    fn ids_and_classes_format_like_sysfs_json() {
        assert_eq!(PciId::parse("0x8086").unwrap().to_string(), "8086");
        assert_eq!(PciId::parse("10D3").unwrap().to_string(), "10d3");
        assert!(PciId::parse("12345").is_none());
        let c = PciClass::parse("0x020000").unwrap();
        assert_eq!(c.to_string(), "020000");
        assert!(PciClass::parse("0x060400").unwrap().is_bridge());
        assert!(!PciClass::parse("0x060000").unwrap().is_bridge());
    }
}
