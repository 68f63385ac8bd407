//! The first pass: TOML text to the file-shaped [`RawConfig`].
//!
//! Owns TOML syntax errors (all of them, via toml's recovering parser), unknown keys (all of
//! them, with a "did you mean"), and table-shape errors from serde. When the only problems are
//! unknown keys, those entries are blanked out (offsets kept) and parsing continues, so the
//! semantic pass can still report everything else in the same run.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::diagnostic::Reporter;
use crate::config::raw::{
    self, RawConfig, DEVICE_KEYS, DOMAIN_KEYS, SRIOV_KEYS, TOP_KEYS, USER_KEYS, WINDOW_KEYS,
};
use crate::config::similar::closest;

/// Parses `source`, reporting every first-pass problem; `None` when the semantic pass cannot
/// run (the file is already known to be invalid).
pub fn read_raw(rep: &mut Reporter<'_>) -> Option<RawConfig> {
    let source = rep.source();
    let (doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        let mut seen: Vec<(Option<Range<usize>>, String)> = Vec::new();
        for e in errors {
            let key = (e.span(), e.message().to_string());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            syntax_error(rep, &e);
        }
        return None;
    }

    let mut unknown = UnknownKeys {
        found: false,
        recoverable: true,
        blank: Vec::new(),
    };
    unknown.table(doc.get_ref(), TOP_KEYS, "the top level", rep);
    let parsed = if unknown.found {
        if !unknown.recoverable {
            return None;
        }
        let mut sanitized = source.as_bytes().to_vec();
        for r in &unknown.blank {
            for b in &mut sanitized[r.clone()] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        let sanitized = String::from_utf8(sanitized).ok()?;
        match raw::parse(&sanitized) {
            Ok(raw) => raw,
            // Something else is wrong too; the unknown keys are reported already.
            Err(_) => return None,
        }
    } else {
        match raw::parse(source) {
            Ok(raw) => raw,
            Err(e) => {
                syntax_error(rep, &e);
                return None;
            }
        }
    };
    Some(parsed)
}

/// A toml error as one diagnostic, with a hint for the shapes people get wrong.
fn syntax_error(rep: &mut Reporter<'_>, e: &toml::de::Error) {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_string();
    let text = rep.text(span.clone());
    let hint = if message.contains("expected a sequence") && text.starts_with('[') {
        let name = text.trim_matches(|c| c == '[' || c == ']').trim();
        format!("write `[[{name}]]` (double brackets): each entry is a table in an array")
    } else if message.contains("expected a sequence") {
        "this key takes one or more tables; write each as a `[[...]]` section".to_string()
    } else if message.contains("duplicate key") {
        "each key may appear once per table; remove or rename one".to_string()
    } else {
        "fix the TOML syntax here (see https://toml.io)".to_string()
    };
    rep.error(span, message, hint);
}

/// Walks the document for keys the format does not have.
struct UnknownKeys {
    found: bool,
    /// Whether blanking the unknown entries leaves a document worth checking further.
    recoverable: bool,
    blank: Vec<Range<usize>>,
}

impl UnknownKeys {
    fn table(&mut self, t: &DeTable<'_>, allowed: &[&str], place: &str, rep: &mut Reporter<'_>) {
        for (key, value) in t.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                let children = match name {
                    "device" if place == "the top level" => Some((DEVICE_KEYS, "[[device]]")),
                    "user" if place == "the top level" => Some((USER_KEYS, "[[user]]")),
                    "sriov" if place == "the top level" => Some((SRIOV_KEYS, "[[sriov]]")),
                    "domain" if place == "the top level" => Some((DOMAIN_KEYS, "[[domain]]")),
                    "window" if place == "[[domain]]" => Some((WINDOW_KEYS, "[[domain.window]]")),
                    _ => None,
                };
                if let Some((keys, child_place)) = children {
                    self.children(value, keys, child_place, rep);
                }
                continue;
            }
            self.found = true;
            let hint = match closest(name, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? {place} takes: {}", allowed.join(", ")),
                None => format!("{place} takes: {}", allowed.join(", ")),
            };
            rep.error(key.span(), format!("unknown key `{name}` in {place}"), hint);
            if is_inline(value) && key.span().start <= value.span().start {
                self.blank.push(key.span().start..value.span().end);
            } else {
                self.recoverable = false;
            }
        }
    }

    fn children(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        keys: &[&str],
        place: &str,
        rep: &mut Reporter<'_>,
    ) {
        // A wrong shape (`[device]`, `device = 3`) is reported by serde afterwards.
        if let DeValue::Array(items) = value.get_ref() {
            for item in items.iter() {
                if let DeValue::Table(t) = item.get_ref() {
                    self.table(t, keys, place, rep);
                }
            }
        }
    }
}

/// Whether a value is written on its key's line (so blanking `key = value` removes it whole),
/// rather than being a `[section]` of its own.
fn is_inline(v: &Spanned<DeValue<'_>>) -> bool {
    match v.get_ref() {
        DeValue::Table(_) => false,
        DeValue::Array(items) => !items
            .iter()
            .any(|i| matches!(i.get_ref(), DeValue::Table(_)) && i.span().start < v.span().start),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn run(src: &str) -> (Option<RawConfig>, Vec<(usize, usize, String)>) {
        let mut rep = Reporter::new(Path::new("t.toml"), src);
        let raw = read_raw(&mut rep);
        let diags = rep.finish();
        let found = diags
            .items()
            .iter()
            .map(|d| {
                let l = d.location.as_ref().unwrap();
                (l.line, l.column, d.message.clone())
            })
            .collect();
        (raw, found)
    }

    #[test]
    fn reports_every_syntax_error() {
        let (raw, found) = run("version = 1\nname = \"a\nx = = 3\n");
        assert!(raw.is_none());
        assert!(found.len() >= 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2, 10));
    }

    #[test]
    fn reports_every_unknown_key_and_keeps_going() {
        let src = "version = 1\nflavour = 2\n[[device]]\nname = \"a\"\nadress = \"03:00.0\"\n\
                   [[domain]]\nname = \"d\"\n[[domain.window]]\niova = 0\nsize = 4096\nhuge = true\n";
        let (raw, found) = run(src);
        let msgs: Vec<_> = found.iter().map(|f| (f.0, f.1, f.2.as_str())).collect();
        assert_eq!(
            msgs,
            vec![
                (2, 1, "unknown key `flavour` in the top level"),
                (5, 1, "unknown key `adress` in [[device]]"),
                (11, 1, "unknown key `huge` in [[domain.window]]"),
            ]
        );
        let raw = raw.expect("blanked document still parses");
        assert_eq!(raw.device.len(), 1);
        assert!(raw.device[0].get_ref().address.is_none());
        assert_eq!(raw.domain[0].get_ref().window.len(), 1);
    }

    #[test]
    fn unknown_section_stops_after_the_first_pass() {
        let src = "version = 1\n[[device]]\nname = \"a\"\n[device.extra]\nx = 1\n";
        let (raw, found) = run(src);
        assert!(raw.is_none());
        assert_eq!(found.len(), 1);
        assert!(found[0].2.contains("`extra`"));
    }

    #[test]
    fn single_brackets_get_a_double_bracket_hint() {
        let src = "version = 1\n[device]\nname = \"a\"\n";
        let mut rep = Reporter::new(Path::new("t.toml"), src);
        assert!(read_raw(&mut rep).is_none());
        let d = rep.finish();
        assert_eq!(
            d.items()[0].hint.as_deref(),
            Some("write `[[device]]` (double brackets): each entry is a table in an array")
        );
    }
}
