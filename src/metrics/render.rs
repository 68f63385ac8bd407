//! The Prometheus text rendering (format 0.0.4): plain data in, text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::domain::status::DomainStatus;
use crate::host::snapshot::Snapshot;
use crate::pci::PciAddress;
use crate::plan::Plan;

/// What the watch loop knows about its passes and the events beside them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WatchStats {
    pub passes: u64,
    pub passes_failed: u64,
    /// Duration of the latest pass, in seconds.
    pub last_pass_seconds: f64,
    /// When the latest pass ended, in seconds since the Unix epoch.
    pub last_pass_end: f64,
    pub hotplug_claims_won: u64,
    pub hotplug_claims_lost: u64,
    pub broker_grants: u64,
    pub broker_refusals: u64,
}

/// Everything one rendering covers. Parts that are unknown are left out of the text (a
/// one-shot `status` has no passes; without a config there is no drift).
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub host: &'a Snapshot,
    /// The desired state, to tell configured functions from the others.
    pub config: Option<&'a Config>,
    /// What is still to do to reach `config` from `host` (the drift).
    pub pending: Option<&'a Plan>,
    /// Held domains (from the running `watch`).
    pub domains: Option<&'a [DomainStatus]>,
    pub watch: Option<WatchStats>,
}

/// Renders `sample`; ends with `# EOF` (a comment to the 0.0.4 parsers, the end marker to
/// OpenMetrics ones).
pub fn render(sample: &Sample) -> String {
    let mut out = Out::default();
    functions(&mut out, sample);
    groups(&mut out, sample.host);
    if let Some(domains) = sample.domains {
        out.family(
            "vfioctl_domains_held",
            "gauge",
            "IOMMU domains held by vfioctl watch.",
        );
        out.sample("vfioctl_domains_held", &[], domains.len() as f64);
        out.family(
            "vfioctl_pinned_bytes",
            "gauge",
            "Bytes of DMA windows pinned for a held domain (window bytes times containers).",
        );
        for d in domains {
            out.sample(
                "vfioctl_pinned_bytes",
                &[("domain", &d.name)],
                d.bytes_pinned as f64,
            );
        }
    }
    if let Some(plan) = sample.pending {
        out.family(
            "vfioctl_pending_changes",
            "gauge",
            "Actions still needed to make the host match the config (drift).",
        );
        out.sample("vfioctl_pending_changes", &[], plan.actions.len() as f64);
        out.family(
            "vfioctl_config_problems",
            "gauge",
            "Reasons parts of the config cannot be realised on this host now.",
        );
        out.sample("vfioctl_config_problems", &[], plan.problems.len() as f64);
    }
    if let Some(w) = sample.watch {
        watch(&mut out, &w);
    }
    out.text.push_str("# EOF\n");
    out.text
}

/// The state of a function relative to the config.
fn state_of(wanted: Option<&String>, driver: Option<&str>) -> &'static str {
    match wanted {
        None => "unmanaged",
        Some(w) if Some(w.as_str()) == driver => "claimed",
        Some(_) => "pending",
    }
}

fn functions(out: &mut Out, sample: &Sample) {
    let host = sample.host;
    // The driver each configured function should be on: the first entry naming it wins, as in
    // the planner; companions go along with their entry.
    let mut wanted: BTreeMap<PciAddress, String> = BTreeMap::new();
    if let Some(config) = sample.config {
        let resolution = crate::plan::resolve::resolve(config, host, &[]);
        for (entry, found) in config.devices.iter().zip(&resolution.entries) {
            for a in found.iter().chain(&entry.companions) {
                wanted.entry(*a).or_insert_with(|| entry.driver.clone());
            }
        }
    }
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for d in &host.devices {
        let driver = d.driver.as_deref();
        let state = match sample.config {
            Some(_) => state_of(wanted.get(&d.address), driver),
            None => "unknown",
        };
        *counts
            .entry((driver.unwrap_or("none").to_string(), state))
            .or_default() += 1;
    }
    out.family(
        "vfioctl_functions",
        "gauge",
        "PCI functions by driver (\"none\": unbound) and state (claimed: configured and on its \
         driver; pending: configured, not yet; unmanaged: not in the config; unknown: no config read).",
    );
    for ((driver, state), n) in &counts {
        out.sample(
            "vfioctl_functions",
            &[("driver", driver), ("state", state)],
            *n as f64,
        );
    }
}

fn groups(out: &mut Out, host: &Snapshot) {
    let (mut viable, mut not) = (0u64, 0u64);
    for g in &host.groups {
        match host.viability(g.id) {
            Some(v) if v.viable => viable += 1,
            _ => not += 1,
        }
    }
    out.family(
        "vfioctl_iommu_groups",
        "gauge",
        "IOMMU groups, by whether the kernel would let user space open them (viable).",
    );
    out.sample("vfioctl_iommu_groups", &[("viable", "true")], viable as f64);
    out.sample("vfioctl_iommu_groups", &[("viable", "false")], not as f64);
}

fn watch(out: &mut Out, w: &WatchStats) {
    let counters: [(&str, &str, u64); 6] = [
        (
            "vfioctl_passes_total",
            "Reconcile passes run by watch.",
            w.passes,
        ),
        (
            "vfioctl_passes_failed_total",
            "Reconcile passes that failed (and were undone).",
            w.passes_failed,
        ),
        (
            "vfioctl_hotplug_claims_won_total",
            "Hot-plugged functions claimed before any host driver bound them.",
            w.hotplug_claims_won,
        ),
        (
            "vfioctl_hotplug_claims_lost_total",
            "Hot-plugged functions a host driver bound first (or whose claim failed).",
            w.hotplug_claims_lost,
        ),
        (
            "vfioctl_broker_grants_total",
            "Held domains handed to users by the fd broker.",
            w.broker_grants,
        ),
        (
            "vfioctl_broker_refusals_total",
            "Requests the fd broker refused.",
            w.broker_refusals,
        ),
    ];
    for (name, help, v) in counters {
        out.family(name, "counter", help);
        out.sample(name, &[], v as f64);
    }
    out.family(
        "vfioctl_last_pass_duration_seconds",
        "gauge",
        "How long the latest reconcile pass took.",
    );
    out.sample(
        "vfioctl_last_pass_duration_seconds",
        &[],
        w.last_pass_seconds,
    );
    out.family(
        "vfioctl_last_pass_timestamp_seconds",
        "gauge",
        "When the latest reconcile pass ended (Unix time).",
    );
    out.sample("vfioctl_last_pass_timestamp_seconds", &[], w.last_pass_end);
}

#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn workstation() -> Snapshot {
        crate::host::load_snapshot(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/hosts/workstation.json"
        )))
        .unwrap()
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    #[test]
    fn functions_are_counted_by_driver_and_state_against_the_config() {
        let host = workstation();
        let config = crate::config::parse_str(
            "version = 1\n[[device]]\nname = \"gpu\"\naddress = \"0000:01:00.0\"\n\
             companions = [\"0000:01:00.1\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let plan = crate::plan::plan(&config, &host);
        let text = render(&Sample {
            host: &host,
            config: Some(&config),
            pending: Some(&plan),
            domains: None,
            watch: None,
        });
        assert_eq!(
            value(
                &text,
                "vfioctl_functions{driver=\"nouveau\",state=\"pending\"}"
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        // The audio companion is pending; the other snd_hda_intel function is not configured.
        assert_eq!(
            value(
                &text,
                "vfioctl_functions{driver=\"snd_hda_intel\",state=\"pending\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                "vfioctl_functions{driver=\"snd_hda_intel\",state=\"unmanaged\"}"
            )
            .as_deref(),
            Some("1")
        );
        let pending: usize = value(&text, "vfioctl_pending_changes")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pending, plan.actions.len());
        assert!(pending > 0);
        // Group 2 (GPU behind its root port) is not viable with nouveau; 0 (host bridge alone) is.
        assert_eq!(
            value(&text, "vfioctl_iommu_groups{viable=\"true\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "vfioctl_iommu_groups{viable=\"false\"}").as_deref(),
            Some("7")
        );
        // No watch figures in a one-shot sample.
        assert!(!text.contains("vfioctl_passes_total"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let host = workstation();
        let domains = vec![DomainStatus {
            name: "vm \"1\"".into(),
            placement: "shared".into(),
            backend: Default::default(),
            backend_why: String::new(),
            mirrored: false,
            containers: vec![],
            windows: vec![],
            bytes_pinned: 1 << 30,
        }];
        let text = render(&Sample {
            host: &host,
            config: None,
            pending: None,
            domains: Some(&domains),
            watch: Some(WatchStats {
                passes: 3,
                passes_failed: 1,
                last_pass_seconds: 0.25,
                last_pass_end: 1_765_000_000.5,
                hotplug_claims_won: 2,
                hotplug_claims_lost: 1,
                broker_grants: 4,
                broker_refusals: 5,
            }),
        });
        let mut typed = std::collections::BTreeMap::new();
        let mut helped = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                let (n, k) = r.split_once(' ').unwrap();
                typed.insert(n.to_string(), k.to_string());
            } else if let Some(r) = l.strip_prefix("# HELP ") {
                helped.insert(r.split_once(' ').unwrap().0.to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(typed.contains_key(name), "{name} has no TYPE");
                assert!(helped.contains(name), "{name} has no HELP");
                let after_labels = l.rsplit_once('}').map_or(l, |(_, rest)| rest);
                let fields = after_labels.split_whitespace().count();
                assert!(
                    fields <= 2 && !after_labels.trim().is_empty(),
                    "no timestamp: {l}"
                );
                assert_eq!(
                    l.split_whitespace()
                        .last()
                        .map(|v| v.parse::<f64>().is_ok()),
                    Some(true),
                    "{l}"
                );
            }
        }
        for (n, k) in &typed {
            assert_eq!(k == "counter", n.ends_with("_total"), "{n} {k}");
        }
        assert_eq!(
            value(&text, "vfioctl_pinned_bytes{domain=\"vm \\\"1\\\"\"}").as_deref(),
            Some("1073741824"),
            "{text}"
        );
        assert_eq!(
            value(&text, "vfioctl_passes_failed_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "vfioctl_last_pass_duration_seconds").as_deref(),
            Some("0.25")
        );
        assert_eq!(
            value(&text, "vfioctl_broker_refusals_total").as_deref(),
            Some("5")
        );
        assert_eq!(
            value(
                &text,
                "vfioctl_functions{driver=\"nouveau\",state=\"unknown\"}"
            )
            .as_deref(),
            Some("1")
        );
    }
}
