//! The value forms of the config file: sizes, IOVAs, modes, PCI ids and addresses, unix names,
//! logical names and driver names. Each parser takes one raw value (and the text it was written
//! as, for integers whose spelling matters) and returns the typed value or a [`Problem`] that
//! says what is wrong and how to write it instead.
//!
//! Pure and location-free: the semantic pass (`check`) attaches the span.

use crate::config::model::UserRef;
use crate::config::raw::RawValue;
use crate::pci::{PciAddress, PciClass, PciId};

/// What is wrong with one value, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

type Res<T> = Result<T, Problem>;

/// One binary unit.
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The IEC units accepted in size strings, largest first.
const UNITS: [(&str, u64); 4] = [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)];

/// A number of bytes in the largest unit that divides it exactly (`1GiB`, `1536MiB`, `4096`).
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (unit, factor) in UNITS {
        if bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

fn wrong_type(what: &str, expected: &str, v: &RawValue, hint: &str) -> Problem {
    Problem::new(
        format!("{what} must be {expected}, found {}", v.kind()),
        hint.to_string(),
    )
}

/// A size: integer bytes, or a string with an IEC unit (`"1GiB"`; `"4096"` and `"4096B"` are
/// bytes). Decimal and ambiguous units (`1G`, `1GB`) are rejected with the IEC form as hint.
pub fn size(what: &str, v: &RawValue) -> Res<u64> {
    match v {
        RawValue::Integer(n) => u64::try_from(*n).map_err(|_| {
            Problem::new(
                format!("{what} is negative ({n})"),
                "a size is a number of bytes, 0 or more",
            )
        }),
        RawValue::String(s) => size_str(what, s),
        RawValue::Float(f) => Err(Problem::new(
            format!("{what} must be a whole number of bytes, found {f}"),
            "write a size string such as \"1536MiB\", or an integer number of bytes",
        )),
        other => Err(wrong_type(
            what,
            "an integer (bytes) or a size string",
            other,
            "write for example \"1GiB\" or 1073741824",
        )),
    }
}

/// The unit a user most likely meant by a non-IEC suffix (`G`, `gb`, `Gi`, `gib` -> `GiB`).
fn iec_for(unit: &str) -> Option<(&'static str, u64)> {
    let lower = unit.to_ascii_lowercase();
    let base = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .or_else(|| lower.strip_suffix('i'))
        .unwrap_or(&lower);
    match base {
        "k" => Some(("KiB", KIB)),
        "m" => Some(("MiB", MIB)),
        "g" => Some(("GiB", GIB)),
        "t" => Some(("TiB", TIB)),
        _ => None,
    }
}

fn size_str(what: &str, s: &str) -> Res<u64> {
    let example = "write for example \"1GiB\", \"512MiB\" or an integer number of bytes";
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err(Problem::new(format!("{what} `{s}` is not a size"), example));
    }
    let factor = match unit {
        "" | "B" => Some(1),
        _ => UNITS.iter().find(|(u, _)| *u == unit).map(|(_, f)| *f),
    };
    let Some(factor) = factor else {
        return Err(match iec_for(unit) {
            Some((iec, _)) => Problem::new(
                format!("{what} `{s}` uses the unit `{unit}`, which is not an IEC unit"),
                format!("sizes use binary IEC units (KiB, MiB, GiB, TiB); write \"{num}{iec}\""),
            ),
            None if matches!(
                unit.to_ascii_lowercase().as_str(),
                "p" | "pb" | "pi" | "pib"
            ) =>
            {
                Problem::new(
                    format!("{what} `{s}` uses a unit larger than TiB"),
                    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(1024)) {
                        Some(t) => format!("the largest unit is TiB; write \"{t}TiB\""),
                        None => "the largest unit is TiB".to_string(),
                    },
                )
            }
            None => Problem::new(
                format!("{what} `{s}` has an unknown unit `{unit}`"),
                example,
            ),
        });
    };
    if num.contains('.') {
        return Err(fraction(what, s, num, factor));
    }
    let n: u64 = num.parse().map_err(|_| {
        Problem::new(
            format!("{what} `{s}` is too large"),
            "a size must be below 16 EiB",
        )
    })?;
    n.checked_mul(factor).ok_or_else(|| {
        Problem::new(
            format!("{what} `{s}` is too large"),
            "a size must be below 16 EiB",
        )
    })
}

/// A fractional size: say so, and offer the exact whole form in a smaller unit when there is one.
fn fraction(what: &str, s: &str, num: &str, factor: u64) -> Problem {
    let exact = num.split_once('.').and_then(|(int, frac)| {
        let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_digits: u32 = frac.len().try_into().ok()?;
        if frac.is_empty() || frac_digits > 12 {
            return None;
        }
        let scale = 10u64.checked_pow(frac_digits)?;
        let frac: u64 = frac.parse().ok()?;
        let whole = int.checked_mul(factor)?;
        let part = u128::from(frac) * u128::from(factor);
        if part % u128::from(scale) != 0 {
            return None;
        }
        whole.checked_add(u64::try_from(part / u128::from(scale)).ok()?)
    });
    let hint = match exact {
        Some(bytes) => format!("sizes are whole numbers; write \"{}\"", format_size(bytes)),
        None => "sizes are whole numbers of bytes or of a unit; use a smaller unit".to_string(),
    };
    Problem::new(format!("{what} `{s}` is not a whole number"), hint)
}

/// An IO virtual address: a non-negative integer or a `"0x..."` hex string (for addresses
/// above the TOML integer range).
pub fn iova(v: &RawValue) -> Res<u64> {
    let hint = "write an integer or a hex string such as \"0x100000000\"";
    match v {
        RawValue::Integer(n) => {
            u64::try_from(*n).map_err(|_| Problem::new(format!("iova is negative ({n})"), hint))
        }
        RawValue::String(s) => {
            let t = s.trim();
            if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                let digits: String = hex.chars().filter(|&c| c != '_').collect();
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Problem::new(
                        format!("iova `{s}` is not a hex number"),
                        hint,
                    ));
                }
                return u64::from_str_radix(&digits, 16).map_err(|_| {
                    Problem::new(
                        format!("iova `{s}` does not fit in 64 bits"),
                        "an IOVA is at most 0xffffffffffffffff",
                    )
                });
            }
            if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
                let h = t
                    .parse::<u64>()
                    .map(|n| format!("write it as an integer, iova = {t}, or as hex \"{n:#x}\""))
                    .unwrap_or_else(|_| hint.to_string());
                return Err(Problem::new(
                    format!("iova `{s}` is a decimal string; iova strings are hexadecimal"),
                    h,
                ));
            }
            if let Ok(bytes) = size_str("iova", t) {
                return Err(Problem::new(
                    format!("iova `{s}` is written as a size"),
                    format!("write the address as hex: \"{bytes:#x}\""),
                ));
            }
            Err(Problem::new(format!("iova `{s}` is not an address"), hint))
        }
        other => Err(wrong_type(
            "iova",
            "an integer or a \"0x...\" string",
            other,
            hint,
        )),
    }
}

/// A permission mode: an octal string (`"0660"`, `"660"`, `"0o660"`) or a TOML octal integer
/// (`0o660`), at most `0777`. `text` is the value as written in the file.
pub fn mode(v: &RawValue, text: &str) -> Res<u32> {
    let hint = "write the mode as an octal string such as \"0660\"";
    match v {
        RawValue::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix("0o").unwrap_or(t);
            if digits.is_empty()
                || digits.len() > 5
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(Problem::new(
                    format!("mode `{s}` is not an octal permission mode"),
                    hint,
                ));
            }
            let m = u32::from_str_radix(digits, 8).map_err(|_| Problem::new("bad mode", hint))?;
            if m > 0o777 {
                return Err(Problem::new(
                    format!("mode `{s}` is above 0777 (setuid, setgid or sticky bits)"),
                    "group nodes take only permission bits, at most \"0777\"; drop the leading digit",
                ));
            }
            Ok(m)
        }
        RawValue::Integer(n) => {
            let written = text.trim();
            if written.starts_with("0o") {
                match u32::try_from(*n) {
                    Ok(m) if m <= 0o777 => Ok(m),
                    _ => Err(Problem::new(
                        format!("mode `{written}` is above 0o777"),
                        "group nodes take only permission bits, at most \"0777\"",
                    )),
                }
            } else {
                let suggestion = if written.len() <= 4
                    && !written.is_empty()
                    && written.bytes().all(|b| (b'0'..=b'7').contains(&b))
                {
                    format!("a mode is octal; quote it: mode = \"{written:0>4}\"")
                } else {
                    hint.to_string()
                };
                Err(Problem::new(
                    format!("mode {written} is a decimal integer"),
                    suggestion,
                ))
            }
        }
        other => Err(wrong_type("mode", "an octal string", other, hint)),
    }
}

/// The written digits of an integer, as a quoted hex id suggestion (`0x8086` -> `"8086"`).
fn id_suggestion(text: &str, width: usize) -> Option<String> {
    let t = text.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t).replace('_', "");
    (digits.len() <= width && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("\"{:0>width$}\"", digits.to_ascii_lowercase()))
}

fn hex_digits(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
}

/// A 16-bit PCI id (vendor, device, subsystem): a string of exactly 4 hex digits, optional `0x`.
pub fn pci_id(key: &str, v: &RawValue, text: &str) -> Res<PciId> {
    match v {
        RawValue::String(s) => {
            let d = hex_digits(s);
            if d.len() == 4 {
                if let Some(id) = PciId::parse(d) {
                    return Ok(id);
                }
            }
            Err(Problem::new(
                format!("{key} `{s}` is not a PCI id"),
                "a PCI id is 4 hex digits, as `lspci -nn` shows them: \"10de\"",
            ))
        }
        RawValue::Integer(_) => Err(Problem::new(
            format!("{key} must be a string of 4 hex digits, found an integer"),
            match id_suggestion(text, 4) {
                Some(q) => format!("quote it as hex: {key} = {q}"),
                None => "write it as 4 hex digits in quotes, e.g. \"10de\"".into(),
            },
        )),
        other => Err(wrong_type(
            key,
            "a string of 4 hex digits",
            other,
            "e.g. \"10de\"",
        )),
    }
}

/// A 24-bit class code: a string of exactly 6 hex digits, optional `0x`.
pub fn pci_class(v: &RawValue, text: &str) -> Res<PciClass> {
    match v {
        RawValue::String(s) => {
            let d = hex_digits(s);
            if d.len() == 6 {
                if let Some(c) = PciClass::parse(d) {
                    return Ok(c);
                }
            }
            Err(Problem::new(
                format!("class `{s}` is not a PCI class code"),
                "a class code is 6 hex digits (class, subclass, prog-if): \"030000\" is VGA",
            ))
        }
        RawValue::Integer(_) => Err(Problem::new(
            "class must be a string of 6 hex digits, found an integer",
            match id_suggestion(text, 6) {
                Some(q) => format!("quote it as hex: class = {q}"),
                None => "write it as 6 hex digits in quotes, e.g. \"030000\"".into(),
            },
        )),
        other => Err(wrong_type(
            "class",
            "a string of 6 hex digits",
            other,
            "e.g. \"030000\"",
        )),
    }
}

/// A PCI function address, long (`0000:03:00.0`) or short (`03:00.0`) form.
pub fn address(key: &str, v: &RawValue) -> Res<PciAddress> {
    let hint = "write `domain:bus:device.function` in hex, like \"0000:03:00.0\" or short \"03:00.0\" (see `lspci -D`)";
    match v {
        RawValue::String(s) => s.parse::<PciAddress>().map_err(|e| {
            let why = match e {
                crate::pci::AddressError::Shape => String::new(),
                e => format!(": {e}"),
            };
            Problem::new(format!("{key} `{s}` is not a PCI address{why}"), hint)
        }),
        other => Err(wrong_type(key, "a PCI address string", other, hint)),
    }
}

/// Whether `s` is a logical name (device, domain, window): letters, digits, `_`, `.`, `-`,
/// starting with a letter or digit, at most 64 characters.
pub fn is_logical_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A logical name.
pub fn logical_name(key: &str, v: &RawValue) -> Res<String> {
    let hint =
        "use letters, digits, `_`, `.` and `-`, starting with a letter or digit (at most 64)";
    match v {
        RawValue::String(s) if is_logical_name(s) => Ok(s.clone()),
        RawValue::String(s) if s.is_empty() => Err(Problem::new(format!("{key} is empty"), hint)),
        RawValue::String(s) => Err(Problem::new(
            format!("{key} `{s}` is not a valid name"),
            hint,
        )),
        other => Err(wrong_type(key, "a string", other, hint)),
    }
}

/// The largest valid uid/gid; `(uid_t)-1` means "no change" to the kernel.
const MAX_ID: u32 = u32::MAX - 1;

/// A unix user or group: a name (`alice`, `_svc`, `build-01`) or a numeric id.
pub fn unix_ref(key: &str, v: &RawValue) -> Res<UserRef> {
    let hint = "a unix name starts with a letter or `_` and has letters, digits, `_`, `-`, `.` (at most 32); or give the numeric id";
    let numeric = |n: u64, shown: &str| -> Res<UserRef> {
        u32::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ID)
            .map(UserRef::Uid)
            .ok_or_else(|| {
                Problem::new(
                    format!("{key} {shown} is not a valid id"),
                    format!("numeric ids go from 0 to {MAX_ID}"),
                )
            })
    };
    match v {
        RawValue::Integer(n) => match u64::try_from(*n) {
            Ok(n) => numeric(n, &n.to_string()),
            Err(_) => Err(Problem::new(format!("{key} {n} is negative"), hint)),
        },
        RawValue::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s.parse::<u64>() {
                Ok(n) => numeric(n, s),
                Err(_) => Err(Problem::new(format!("{key} {s} is not a valid id"), hint)),
            }
        }
        RawValue::String(s) => {
            let body = s.strip_suffix('$').unwrap_or(s);
            let mut chars = body.chars();
            let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && s.len() <= 32
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if ok {
                Ok(UserRef::Name(s.clone()))
            } else {
                Err(Problem::new(
                    format!("{key} `{s}` is not a valid unix name"),
                    hint,
                ))
            }
        }
        other => Err(wrong_type(key, "a name or a numeric id", other, hint)),
    }
}

/// A target driver: `vfio-pci`, or a vfio variant driver (`mlx5_vfio_pci`, `hisi_acc_vfio_pci`).
pub fn driver(v: &RawValue) -> Res<String> {
    let hint = "vfioctl binds devices to `vfio-pci` or to a vfio variant driver such as `mlx5_vfio_pci`; leave `driver` out to use vfio-pci";
    match v {
        RawValue::String(s) if s == "vfio-pci" => Ok(s.clone()),
        RawValue::String(s)
            if s.len() > "_vfio_pci".len()
                && s.ends_with("_vfio_pci")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Ok(s.clone())
        }
        RawValue::String(s) if s == "vfio_pci" => Err(Problem::new(
            "driver `vfio_pci` is the module name, not the driver name",
            "the driver is called `vfio-pci` (with a dash); or leave `driver` out",
        )),
        RawValue::String(s) => Err(Problem::new(
            format!("driver `{s}` is not a vfio driver"),
            hint,
        )),
        other => Err(wrong_type("driver", "a string", other, hint)),
    }
}

/// A boolean flag.
pub fn flag(key: &str, v: &RawValue) -> Res<bool> {
    match v {
        RawValue::Boolean(b) => Ok(*b),
        RawValue::String(s) if s == "true" || s == "false" => Err(Problem::new(
            format!("{key} must be a boolean, found the string \"{s}\""),
            format!("drop the quotes: {key} = {s}"),
        )),
        other => Err(wrong_type(
            key,
            "true or false",
            other,
            &format!("write {key} = true or {key} = false"),
        )),
    }
}

/// The PCI limit on virtual functions per physical function (TotalVFs is 16 bits).
pub const MAX_VFS: u32 = u16::MAX as u32;

/// A number of SR-IOV virtual functions.
pub fn num_vfs(v: &RawValue) -> Res<u32> {
    let hint =
        "num_vfs is how many VFs to create, 0 to 65535 (at most the device's sriov_totalvfs)";
    match v {
        RawValue::Integer(n) => u32::try_from(*n)
            .ok()
            .filter(|&n| n <= MAX_VFS)
            .ok_or_else(|| Problem::new(format!("num_vfs {n} is out of range"), hint)),
        RawValue::String(s) if s.parse::<u32>().is_ok() => Err(Problem::new(
            format!("num_vfs must be an integer, found the string \"{s}\""),
            format!("drop the quotes: num_vfs = {s}"),
        )),
        other => Err(wrong_type("num_vfs", "an integer", other, hint)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> RawValue {
        RawValue::String(x.into())
    }

    #[test]
    fn sizes_take_bytes_and_iec_units() {
        assert_eq!(size("size", &RawValue::Integer(4096)), Ok(4096));
        assert_eq!(size("size", &s("4096")), Ok(4096));
        assert_eq!(size("size", &s("4096B")), Ok(4096));
        assert_eq!(size("size", &s("4KiB")), Ok(4096));
        assert_eq!(size("size", &s("2 MiB")), Ok(2 << 20));
        assert_eq!(size("size", &s("1GiB")), Ok(1 << 30));
        assert_eq!(size("size", &s("3TiB")), Ok(3 << 40));
        assert_eq!(size("size", &s("0")), Ok(0));
    }

    #[test]
    fn decimal_and_ambiguous_units_hint_the_iec_form() {
        for (bad, want) in [
            ("1G", "\"1GiB\""),
            ("1GB", "\"1GiB\""),
            ("1gb", "\"1GiB\""),
            ("1gib", "\"1GiB\""),
            ("512M", "\"512MiB\""),
            ("64K", "\"64KiB\""),
            ("2T", "\"2TiB\""),
            ("2Ti", "\"2TiB\""),
        ] {
            let p = size("memlock", &s(bad)).unwrap_err();
            assert!(p.message.contains("not an IEC unit"), "{bad}: {p:?}");
            assert!(p.hint.as_deref().unwrap().contains(want), "{bad}: {p:?}");
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(size("size", &RawValue::Integer(-1))
            .unwrap_err()
            .message
            .contains("negative"));
        assert!(size("size", &s("")).is_err());
        assert!(size("size", &s("GiB")).is_err());
        assert!(size("size", &s("1XB"))
            .unwrap_err()
            .message
            .contains("unknown unit"));
        assert!(size("size", &s("1PiB"))
            .unwrap_err()
            .hint
            .unwrap()
            .contains("\"1024TiB\""));
        assert!(size("size", &s("16777216TiB"))
            .unwrap_err()
            .message
            .contains("too large"));
        assert!(size("size", &s("99999999999999999999"))
            .unwrap_err()
            .message
            .contains("too large"));
        assert!(size("size", &RawValue::Boolean(true))
            .unwrap_err()
            .message
            .contains("found a boolean"));
        let p = size("size", &s("1.5GiB")).unwrap_err();
        assert_eq!(
            p.hint.unwrap(),
            "sizes are whole numbers; write \"1536MiB\""
        );
        let p = size("size", &s("0.1KiB")).unwrap_err();
        assert!(p.hint.unwrap().contains("smaller unit"));
    }

    proptest::proptest! {
        #[test]
        fn formatted_sizes_parse_back(bytes in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(size("size", &s(&format_size(bytes))), Ok(bytes));
        }

        #[test]
        fn hex_iovas_parse_back(addr in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(iova(&s(&format!("{addr:#x}"))), Ok(addr));
        }

        #[test]
        fn size_parsing_never_panics(text in "\\PC{0,24}") {
            let _ = size("size", &s(&text));
            let _ = iova(&s(&text));
            let _ = mode(&s(&text), &text);
        }
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1536 << 20), "1536MiB");
        assert_eq!(format_size(4097), "4097");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn iovas_are_integers_or_hex_strings() {
        assert_eq!(iova(&RawValue::Integer(0x1000)), Ok(0x1000));
        assert_eq!(iova(&s("0x100000000")), Ok(1 << 32));
        assert_eq!(iova(&s("0XFFFF_F000")), Ok(0xffff_f000));
        assert_eq!(iova(&s("0xffffffffffffffff")), Ok(u64::MAX));
        assert!(iova(&s("0x1_0000_0000_0000_0000"))
            .unwrap_err()
            .message
            .contains("64 bits"));
        assert!(iova(&s("0x")).is_err());
        assert!(iova(&s("0xg")).is_err());
        assert!(iova(&RawValue::Integer(-4096))
            .unwrap_err()
            .message
            .contains("negative"));
        let p = iova(&s("4096")).unwrap_err();
        assert!(p.hint.unwrap().contains("\"0x1000\""));
        let p = iova(&s("4GiB")).unwrap_err();
        assert_eq!(p.hint.unwrap(), "write the address as hex: \"0x100000000\"");
    }

    #[test]
    fn modes_are_octal_and_at_most_0777() {
        assert_eq!(mode(&s("0660"), "\"0660\""), Ok(0o660));
        assert_eq!(mode(&s("600"), "\"600\""), Ok(0o600));
        assert_eq!(mode(&s("0o640"), "\"0o640\""), Ok(0o640));
        assert_eq!(mode(&RawValue::Integer(0o660), "0o660"), Ok(0o660));
        assert!(mode(&s("0888"), "").is_err());
        assert!(mode(&s("rw-rw----"), "").is_err());
        assert!(mode(&s(""), "").is_err());
        assert!(mode(&s("04755"), "")
            .unwrap_err()
            .message
            .contains("setuid"));
        assert!(mode(&s("1777"), "").unwrap_err().message.contains("setuid"));
        assert!(mode(&RawValue::Integer(0o4755), "0o4755").is_err());
        let p = mode(&RawValue::Integer(660), "660").unwrap_err();
        assert_eq!(
            p.hint.unwrap(),
            "a mode is octal; quote it: mode = \"0660\""
        );
    }

    #[test]
    fn pci_ids_are_four_hex_digits() {
        assert_eq!(pci_id("vendor", &s("10DE"), ""), Ok(PciId(0x10de)));
        assert_eq!(pci_id("vendor", &s("0x8086"), ""), Ok(PciId(0x8086)));
        assert!(pci_id("vendor", &s("10d"), "").is_err());
        assert!(pci_id("vendor", &s("10dex"), "").is_err());
        assert!(pci_id("vendor", &s("zzzz"), "").is_err());
        let p = pci_id("vendor", &RawValue::Integer(0x8086), "0x8086").unwrap_err();
        assert_eq!(p.hint.unwrap(), "quote it as hex: vendor = \"8086\"");
        let p = pci_id("device", &RawValue::Integer(1234), "1234").unwrap_err();
        assert_eq!(p.hint.unwrap(), "quote it as hex: device = \"1234\"");
        assert_eq!(pci_class(&s("030000"), ""), Ok(PciClass(0x030000)));
        assert!(pci_class(&s("0300"), "").is_err());
    }

    #[test]
    fn unix_refs_take_names_and_numeric_ids() {
        assert_eq!(
            unix_ref("name", &s("alice")),
            Ok(UserRef::Name("alice".into()))
        );
        assert_eq!(
            unix_ref("name", &s("_svc-1.x")),
            Ok(UserRef::Name("_svc-1.x".into()))
        );
        assert_eq!(
            unix_ref("name", &s("host$")),
            Ok(UserRef::Name("host$".into()))
        );
        assert_eq!(unix_ref("name", &s("1000")), Ok(UserRef::Uid(1000)));
        assert_eq!(unix_ref("name", &RawValue::Integer(0)), Ok(UserRef::Uid(0)));
        assert!(unix_ref("name", &RawValue::Integer(4294967295)).is_err());
        assert!(unix_ref("name", &RawValue::Integer(-1)).is_err());
        assert!(unix_ref("name", &s("")).is_err());
        assert!(unix_ref("name", &s("-alice")).is_err());
        assert!(unix_ref("name", &s("al ice")).is_err());
        assert!(unix_ref("name", &s("9alice")).is_err());
        assert!(unix_ref("name", &s(&"a".repeat(33))).is_err());
    }

    #[test]
    fn drivers_must_be_vfio() {
        assert_eq!(driver(&s("vfio-pci")), Ok("vfio-pci".into()));
        assert_eq!(driver(&s("mlx5_vfio_pci")), Ok("mlx5_vfio_pci".into()));
        assert!(driver(&s("_vfio_pci")).is_err());
        assert!(driver(&s("nvidia"))
            .unwrap_err()
            .hint
            .unwrap()
            .contains("vfio-pci"));
        assert!(driver(&s("vfio_pci"))
            .unwrap_err()
            .message
            .contains("module name"));
    }

    #[test]
    fn names_flags_and_vf_counts() {
        assert!(is_logical_name("gpu0.audio-1_x"));
        assert!(!is_logical_name("-x"));
        assert!(!is_logical_name("a b"));
        assert!(!is_logical_name(&"a".repeat(65)));
        assert!(logical_name("name", &s(""))
            .unwrap_err()
            .message
            .contains("empty"));
        assert_eq!(flag("force", &RawValue::Boolean(true)), Ok(true));
        assert!(flag("force", &s("true"))
            .unwrap_err()
            .hint
            .unwrap()
            .contains("force = true"));
        assert_eq!(num_vfs(&RawValue::Integer(8)), Ok(8));
        assert!(num_vfs(&RawValue::Integer(-1)).is_err());
        assert!(num_vfs(&RawValue::Integer(65536)).is_err());
        assert!(num_vfs(&s("4"))
            .unwrap_err()
            .hint
            .unwrap()
            .contains("num_vfs = 4"));
    }
}
