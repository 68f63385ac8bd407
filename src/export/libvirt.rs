//! libvirt `<hostdev>` elements for what a `[[device]]` hands out: one
//! `<hostdev mode='subsystem' type='pci' managed='no'>` per function (companions included),
//! ready for `virsh attach-device`. `managed='no'` because vfioctl binds and owns the functions:
//! libvirt must neither detach them from a host driver nor give them back after the guest.
//! Pure: text from a [`Handout`] entry.

use crate::pci::PciAddress;

use super::handout::Entry;

/// The elements for `entry`, one per function, each preceded by an XML comment naming the
/// entry and the function, separated by a blank line.
pub fn hostdevs(entry: &Entry) -> String {
    let mut out = String::new();
    for (i, a) in entry.addresses().iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&hostdev(&entry.name, *a));
    }
    out
}

/// One element for function `a` of the entry named `name`.
pub fn hostdev(name: &str, a: PciAddress) -> String {
    format!(
        "<!-- vfioctl [[device]] {}: {a} -->\n\
         <hostdev mode='subsystem' type='pci' managed='no'>\n  \
         <source>\n    \
         <address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{:x}'/>\n  \
         </source>\n\
         </hostdev>\n",
        comment_text(name),
        a.domain,
        a.bus,
        a.device,
        a.function
    )
}

/// `s` made safe inside an XML comment: markup characters escaped, and no `--` (which would
/// end or break the comment).
fn comment_text(s: &str) -> String {
    let mut out = escape(s);
    while out.contains("--") {
        out = out.replace("--", "-&#45;");
    }
    out
}

/// `s` with XML's special characters escaped (for text, attribute values and comments).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
