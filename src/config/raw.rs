//! The file-shaped config: what serde reads from TOML before any meaning is checked.
//!
//! Owns the exact key set of `/etc/vfio.toml` (unknown keys are rejected here) and the JSON
//! Schema annotations, so `vfioctl schema` and the parser can never disagree. Every value is
//! kept as a [`RawValue`] with its byte span: type and range errors are reported by the semantic
//! pass (`check`), which can point at the exact value and report every problem in one run.

use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A value as written, with the spans of nested values kept (unlike `toml::Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Spanned<RawValue>>),
    Table(Vec<(String, Spanned<RawValue>)>),
}

impl RawValue {
    /// What kind of TOML value this is, for messages ("expected a string, found an integer").
    pub fn kind(&self) -> &'static str {
        match self {
            RawValue::String(_) => "a string",
            RawValue::Integer(_) => "an integer",
            RawValue::Float(_) => "a float",
            RawValue::Boolean(_) => "a boolean",
            RawValue::Datetime(_) => "a date-time",
            RawValue::Array(_) => "an array",
            RawValue::Table(_) => "a table",
        }
    }
}

/// The key toml uses to smuggle a date-time through serde's data model.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        i64::try_from(v)
            .map(RawValue::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries: Vec<(String, Spanned<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                let text: String = map.next_value()?;
                return Ok(RawValue::Datetime(text));
            }
            let value = map.next_value::<Spanned<RawValue>>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Table(entries))
    }
}

/// A value with its byte span in the source.
pub type Field = Option<Spanned<RawValue>>;

/// vfioctl desired state (`/etc/vfio.toml`, format version 1): the devices to hand to VFIO,
/// who may open them, SR-IOV virtual functions to create, and IOMMU domains with DMA windows.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "vfioctl configuration")]
pub struct RawConfig {
    /// Format version of this file. Must be 1.
    #[schemars(schema_with = "version_schema")]
    pub version: Field,
    /// Devices to bind to vfio-pci (or a vfio variant driver), one `[[device]]` table each.
    #[serde(default)]
    #[schemars(with = "Vec<RawDevice>")]
    pub device: Vec<Spanned<RawDevice>>,
    /// Unix users who get the VFIO group nodes of devices, one `[[user]]` table each.
    #[serde(default)]
    #[schemars(with = "Vec<RawUser>")]
    pub user: Vec<Spanned<RawUser>>,
    /// SR-IOV physical functions and how many virtual functions each should have.
    #[serde(default)]
    #[schemars(with = "Vec<RawSriov>")]
    pub sriov: Vec<Spanned<RawSriov>>,
    /// IOMMU domains: devices whose groups share one address space, with the DMA windows it maps.
    #[serde(default)]
    #[schemars(with = "Vec<RawDomain>")]
    pub domain: Vec<Spanned<RawDomain>>,
    /// Kernel interface for held domains, file-wide (a `[[domain]]` may override it):
    /// `"auto"` (default: iommufd where `/dev/iommu` exists and every member on a vfio driver
    /// has a VFIO device cdev, else legacy), `"iommufd"` or `"legacy"` (groups and containers).
    /// Exports (CDI, the device plugin) offer `/dev/iommu` + the device cdevs where it resolves
    /// to iommufd.
    #[serde(default)]
    #[schemars(schema_with = "backend_schema")]
    pub backend: Field,
}

/// A device to hand to VFIO, chosen by PCI address or by vendor and device id.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Device")]
pub struct RawDevice {
    /// Unique logical name, used by `[[user]]` and `[[domain]]` entries.
    #[schemars(schema_with = "name_schema")]
    pub name: Field,
    /// PCI address of exactly one function, `0000:03:00.0` or short `03:00.0`.
    /// Give either `address` or `vendor` + `device`.
    #[serde(default)]
    #[schemars(schema_with = "address_schema")]
    pub address: Field,
    /// PCI vendor id, 4 hex digits (`"10de"`). Selects every function with this vendor and
    /// `device` id.
    #[serde(default)]
    #[schemars(schema_with = "pci_id_schema")]
    pub vendor: Field,
    /// PCI device id, 4 hex digits (`"2204"`); goes with `vendor`.
    #[serde(default)]
    #[schemars(schema_with = "pci_id_schema")]
    pub device: Field,
    /// Narrows a vendor/device selector to this subsystem vendor id (4 hex digits).
    #[serde(default)]
    #[schemars(schema_with = "pci_id_schema")]
    pub subsystem_vendor: Field,
    /// Narrows a vendor/device selector to this subsystem device id (4 hex digits).
    #[serde(default)]
    #[schemars(schema_with = "pci_id_schema")]
    pub subsystem_device: Field,
    /// Narrows a vendor/device selector to this class code (6 hex digits, `"030000"`).
    #[serde(default)]
    #[schemars(schema_with = "pci_class_schema")]
    pub class: Field,
    /// Driver to bind: `vfio-pci` (default) or a vfio variant driver such as `mlx5_vfio_pci`.
    #[serde(default)]
    #[schemars(schema_with = "driver_schema")]
    pub driver: Field,
    /// Other functions of the same IOMMU group that may be taken along (consent), such as a
    /// GPU's HDMI audio function.
    #[serde(default)]
    #[schemars(schema_with = "address_list_schema")]
    pub companions: Field,
    /// Take the device even when the host is using it (mounted disk, active network link,
    /// console framebuffer). Default false.
    #[serde(default)]
    #[schemars(schema_with = "bool_false_schema")]
    pub force: Field,
}

/// A unix user who gets the VFIO group nodes of some devices.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "User")]
pub struct RawUser {
    /// Unix user name (`"alice"`) or numeric uid (`1000` or `"1000"`).
    #[schemars(schema_with = "unix_name_schema")]
    pub name: Field,
    /// Unix group (name or numeric gid) that also gets access to the group nodes.
    #[serde(default)]
    #[schemars(schema_with = "unix_name_schema")]
    pub group: Field,
    /// Permission bits of the group nodes as an octal string (`"0660"`). Default `"0600"`,
    /// or `"0660"` when `group` is given. At most `"0777"`.
    #[serde(default)]
    #[schemars(schema_with = "mode_schema")]
    pub mode: Field,
    /// Names of `[[device]]` entries whose group nodes this user gets.
    #[schemars(schema_with = "name_list_schema")]
    pub devices: Field,
    /// Locked-memory budget this user needs for DMA mappings: bytes, or a string with an IEC
    /// unit (`"16GiB"`).
    #[serde(default)]
    #[schemars(schema_with = "size_schema")]
    pub memlock: Field,
}

/// An SR-IOV physical function and the number of virtual functions it should have.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Sriov")]
pub struct RawSriov {
    /// PCI address of the physical function.
    #[schemars(schema_with = "address_schema")]
    pub pf: Field,
    /// Number of virtual functions to create (0 removes them all).
    #[schemars(schema_with = "num_vfs_schema")]
    pub num_vfs: Field,
}

/// An IOMMU domain: the groups of these devices share one DMA address space.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Domain")]
pub struct RawDomain {
    /// Unique name of the domain (`vfioctl domain open NAME`).
    #[schemars(schema_with = "name_schema")]
    pub name: Field,
    /// Names of `[[device]]` entries in this domain. A device is in at most one domain.
    #[schemars(schema_with = "name_list_schema")]
    pub devices: Field,
    /// `"shared"` (default): all groups in one container. `"per-group"`: one container per
    /// group with identical mappings.
    #[serde(default)]
    #[schemars(schema_with = "placement_schema")]
    pub placement: Field,
    /// Kernel interface for this domain: `"auto"`, `"iommufd"` or `"legacy"`. Default: the
    /// file-wide `backend` (itself `"auto"` by default).
    #[serde(default)]
    #[schemars(schema_with = "backend_schema")]
    pub backend: Field,
    /// DMA windows (IOVA ranges) the domain maps, one `[[domain.window]]` table each.
    #[serde(default)]
    #[schemars(with = "Vec<RawWindow>")]
    pub window: Vec<Spanned<RawWindow>>,
}

/// An IOVA range mapped in a domain.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Window")]
pub struct RawWindow {
    /// Optional name, used in messages; unique within the domain.
    #[serde(default)]
    #[schemars(schema_with = "name_schema")]
    pub name: Field,
    /// Start of the window in IO virtual address space: integer or `"0x..."` hex string.
    /// Must be 4 KiB aligned.
    #[schemars(schema_with = "iova_schema")]
    pub iova: Field,
    /// Length of the window: bytes, or a string with an IEC unit (`"1GiB"`). Non-zero,
    /// a multiple of 4 KiB.
    #[schemars(schema_with = "size_schema")]
    pub size: Field,
    /// Back the window with huge pages (then `iova` and `size` must be 2 MiB aligned).
    /// Default false.
    #[serde(default)]
    #[schemars(schema_with = "bool_false_schema")]
    pub hugepages: Field,
}

/// The keys each table accepts (kept equal to the structs above by a test against the schema).
pub const TOP_KEYS: &[&str] = &["version", "device", "user", "sriov", "domain", "backend"];
pub const DEVICE_KEYS: &[&str] = &[
    "name",
    "address",
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "class",
    "driver",
    "companions",
    "force",
];
pub const USER_KEYS: &[&str] = &["name", "group", "mode", "devices", "memlock"];
pub const SRIOV_KEYS: &[&str] = &["pf", "num_vfs"];
pub const DOMAIN_KEYS: &[&str] = &["name", "devices", "placement", "backend", "window"];
pub const WINDOW_KEYS: &[&str] = &["name", "iova", "size", "hugepages"];

// JSON Schema fragments for the values kept raw. Patterns state the accepted forms; the
// semantic pass checks ranges and gives the hints.

/// The pattern of a PCI address, long or short form.
const ADDRESS_PATTERN: &str = r"^([0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:[0-1]?[0-9a-fA-F]\.[0-7]$";
/// The pattern of a size string.
const SIZE_PATTERN: &str = r"^[0-9]+ ?(B|KiB|MiB|GiB|TiB)?$";
/// The pattern of a logical name.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

fn version_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "const": 1 })
}

fn name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": NAME_PATTERN })
}

fn name_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": NAME_PATTERN },
        "uniqueItems": true
    })
}

fn address_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": ADDRESS_PATTERN, "examples": ["0000:03:00.0"] })
}

fn address_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": ADDRESS_PATTERN },
        "uniqueItems": true
    })
}

fn pci_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^(0x)?[0-9a-fA-F]{4}$", "examples": ["8086"] })
}

fn pci_class_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^(0x)?[0-9a-fA-F]{6}$", "examples": ["030000"] })
}

fn driver_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^(vfio-pci|[a-z0-9_]+_vfio_pci)$",
        "default": "vfio-pci"
    })
}

fn bool_false_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "boolean", "default": false })
}

fn unix_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string", "pattern": "^([a-z_][a-z0-9_-]{0,30}\\$?|[0-9]+)$" },
            { "type": "integer", "minimum": 0, "maximum": 4294967294u64 }
        ]
    })
}

fn mode_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^0?[0-7]{1,3}$", "examples": ["0660"] })
}

fn size_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 0 },
            { "type": "string", "pattern": SIZE_PATTERN }
        ],
        "examples": ["1GiB", "512MiB"]
    })
}

fn iova_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 0 },
            { "type": "string", "pattern": "^0[xX][0-9a-fA-F_]{1,16}$" }
        ],
        "examples": ["0x100000000"]
    })
}

fn num_vfs_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 0, "maximum": 65535 })
}

fn backend_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["auto", "iommufd", "legacy"], "default": "auto" })
}

fn placement_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["shared", "per-group"], "default": "shared" })
}

/// Parses `source` into the raw, file-shaped config. The error is toml's (syntax, unknown key,
/// wrong table shape), with its span.
pub fn parse(source: &str) -> Result<RawConfig, toml::de::Error> {
    toml::from_str(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spans_of_array_elements() {
        let src = "version = 1\n[[user]]\nname = \"a\"\ndevices = [\"x\", \"yy\"]\n";
        let raw = parse(src).unwrap();
        let user = raw.user[0].get_ref();
        let devices = user.devices.as_ref().unwrap();
        let RawValue::Array(items) = devices.get_ref() else {
            panic!("not an array: {devices:?}");
        };
        assert_eq!(&src[items[1].span()], "\"yy\"");
        assert_eq!(items[1].get_ref(), &RawValue::String("yy".into()));
    }

    #[test]
    fn reads_every_value_kind() {
        let src = "version = 1\n[[device]]\nname = 1.5\naddress = 1979-05-27\n\
                   companions = { a = true }\nforce = [[1], []]\n";
        let raw = parse(src).unwrap();
        let d = raw.device[0].get_ref();
        assert_eq!(d.name.as_ref().unwrap().get_ref().kind(), "a float");
        assert_eq!(d.address.as_ref().unwrap().get_ref().kind(), "a date-time");
        assert_eq!(d.companions.as_ref().unwrap().get_ref().kind(), "a table");
        assert_eq!(d.force.as_ref().unwrap().get_ref().kind(), "an array");
    }

    #[test]
    fn rejects_unknown_keys_at_the_key() {
        let src = "version = 1\n[[device]]\nname = \"a\"\nadress = \"03:00.0\"\n";
        let err = parse(src).unwrap_err();
        assert_eq!(&src[err.span().unwrap()], "adress");
        assert!(err.message().contains("unknown field `adress`"));
    }
}
