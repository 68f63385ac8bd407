//! `contrib/` stays true to the CLI: the man pages and shell completions are generated from the
//! clap definition (`vfioctl::cli::Cli`) and must match what is committed, and every vfioctl
//! command line in the udev rules and systemd units must parse.
//!
//! After changing the CLI, regenerate with: `VFIOCTL_BLESS=1 cargo test --test watch_contrib`.

use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, Parser};
use clap_complete::Shell;
use vfioctl::cli::Cli;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

/// What every page says about exit codes (`vfioctl::cli::Exit`).
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
Done: the command succeeded (the host matches the config, or there was nothing to change).
.TP
1
Failed, or the config cannot be realised: every reason is printed.
.TP
2
Usage error: an unknown flag, a malformed address, a flag that cannot apply.
.TP
3
Changes are pending (\fBreconcile \-\-check\fR).
.TP
4
A one\-shot \fBreconcile\fR converged, but the config has \fB[[domain]]\fRs and no \fBvfioctl watch\fR runs to hold them (\fB\-\-no\-domains\fR leaves them to the service and exits 0); \fBdomain open\fR, \fBiommufd open\fR: no \fBvfioctl watch\fR runs to hand out a domain or an iommufd.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBVFIOCTL_LOG\fR
Log filter (\fBtracing\fR's EnvFilter syntax, e.g. \fBinfo\fR or \fBvfioctl=debug\fR); overrides \fB\-v\fR.
.TP
\fBNO_COLOR\fR
Set: no colour in diagnostics on a terminal.
.TP
\fBJOURNAL_STREAM\fR
Set by systemd: when it names standard error, logs go to the journal natively, with a priority and the fields \fBADDRESS=\fR, \fBGROUP=\fR, \fBACTION=\fR (\fBjournalctl \-u vfioctl\-watch ADDRESS=0000:01:00.0\fR); otherwise they are plain text on standard error.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR, \fBLISTEN_FDS\fR, \fBLISTEN_FDNAMES\fR, \fBFDSTORE\fR
Set by systemd for \fBwatch\fR: readiness, \fBSTATUS=\fR and watchdog pings; held domains handed back from the fd store after a restart; \fBFDSTORE\fR (set by the unit, since systemd before 254 does not) allows storing them.
"#;

const FILES: &str = r#".SH FILES
.TP
\fI/etc/vfio.toml\fR
The config, see \fBvfio.toml\fR(5).
.TP
\fI/var/lib/vfioctl/\fR
The journal of every change vfioctl made and the devices' original state (\fB\-\-state\-dir\fR).
.TP
\fI/run/vfioctl/\fR
The reconcile lock, in\-flight records, the fd broker's socket, the held domains' published state (\fB\-\-run\-dir\fR).
.TP
\fI/usr/lib/systemd/system/vfioctl\-watch.service\fR
The service that runs \fBvfioctl watch\fR.
.TP
\fI/usr/lib/udev/rules.d/70\-vfioctl.rules\fR
Claims configured functions at boot and on hot\-plug, before their host driver loads.
.TP
\fI/usr/share/vfioctl/vfio.schema.json\fR
The config's JSON Schema (also \fBvfioctl schema\fR).
.TP
\fI/usr/share/doc/vfioctl/examples/\fR
Example configs.
"#;

/// EXAMPLES per page (the root page's key is "vfioctl").
fn examples(page: &str) -> Option<&'static str> {
    Some(match page {
        "vfioctl" => {
            r#".SH EXAMPLES
Plan a config against a saved host, changing nothing:
.PP
.nf
    vfioctl reconcile \-\-dry\-run \-\-config /usr/share/doc/vfioctl/examples/gpu\-passthrough.toml \e
        \-\-host host.json
.fi
.PP
Check \fI/etc/vfio.toml\fR, apply it, then keep it applied:
.PP
.nf
    vfioctl validate
    vfioctl reconcile
    systemctl enable \-\-now vfioctl\-watch
.fi
"#
        }
        "vfioctl-validate" => {
            r#".SH EXAMPLES
.nf
    vfioctl validate /etc/vfio.toml
    vfioctl validate \-\-json new.toml
.fi
"#
        }
        "vfioctl-status" => {
            r#".SH EXAMPLES
.nf
    vfioctl status
    vfioctl status \-\-json \-\-host host.json
.fi
"#
        }
        "vfioctl-snapshot" => {
            r#".SH EXAMPLES
.nf
    vfioctl snapshot \-o host.json
.fi
"#
        }
        "vfioctl-reconcile" => {
            r#".SH EXAMPLES
.nf
    vfioctl reconcile \-\-dry\-run
    vfioctl reconcile \-\-dry\-run \-\-check \-\-config vfio.toml \-\-host host.json
    vfioctl reconcile \-\-device 0000:01:00.0 \-\-no\-domains
.fi
"#
        }
        "vfioctl-rollback" => {
            r#".SH EXAMPLES
.nf
    vfioctl rollback \-\-dry\-run
    vfioctl rollback
.fi
"#
        }
        "vfioctl-watch" => {
            r#".SH EXAMPLES
.nf
    systemctl enable \-\-now vfioctl\-watch
    systemctl reload vfioctl\-watch
    journalctl \-u vfioctl\-watch ADDRESS=0000:01:00.0
.fi
"#
        }
        "vfioctl-domain-open" => {
            r#".SH EXAMPLES
.nf
    vfioctl domain open dma \-\- my\-user\-space\-driver   # reads VFIOCTL_* fds; VMs: vfioctl iommufd open
.fi
"#
        }
        "vfioctl-iommufd-open" => {
            r#".SH EXAMPLES
.nf
    vfioctl iommufd open \-\- sh \-c 'exec qemu\-system\-x86_64 ... \\
        \-object iommufd,id=i0,fd=$VFIOCTL_IOMMUFD_FD \\
        \-device vfio\-pci,host=0000:01:00.0,iommufd=i0'
.fi
"#
        }
        "vfioctl-schema" => {
            r#".SH EXAMPLES
.nf
    vfioctl schema > vfio.schema.json
.fi
"#
        }
        _ => return None,
    })
}

/// The CLI as the pages and completions show it: no `help` subcommand (its pages would not
/// exist), hidden plumbing left out.
fn documented_cli() -> Command {
    fn no_help(c: Command) -> Command {
        c.disable_help_subcommand(true).mut_subcommands(no_help)
    }
    let mut cmd = no_help(Cli::command());
    // Propagates global flags and the version into the subcommands.
    cmd.build();
    cmd
}

/// One man page: clap_mangen's sections, then EXIT STATUS, ENVIRONMENT and FILES (root page),
/// EXAMPLES, SEE ALSO.
fn render_man(cmd: &Command, name: &str, see_also: &[String]) -> Vec<u8> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let w: &mut dyn std::io::Write = &mut out;
    man.render_title(w).unwrap();
    man.render_name_section(w).unwrap();
    man.render_synopsis_section(w).unwrap();
    man.render_description_section(w).unwrap();
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w).unwrap();
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w).unwrap();
    }
    out.extend_from_slice(EXIT_STATUS.as_bytes());
    if name == "vfioctl" {
        out.extend_from_slice(ENVIRONMENT.as_bytes());
        out.extend_from_slice(FILES.as_bytes());
    }
    if let Some(ex) = examples(name) {
        out.extend_from_slice(ex.as_bytes());
    }
    let refs: Vec<String> = see_also
        .iter()
        .filter(|p| p.as_str() != format!("{name}(1)"))
        .map(|p| {
            let (page, section) = p.trim_end_matches(')').split_once('(').unwrap();
            format!("\\fB{}\\fR({section})", page.replace('-', "\\-"))
        })
        .collect();
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", ")).as_bytes());
    out
}

/// Every visible command below `cmd` (depth first), with its page name.
fn pages(cmd: &Command, name: &str, bin: &str, out: &mut Vec<(String, Command)>) {
    let page = cmd.clone().display_name(name).bin_name(bin);
    out.push((name.to_string(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(
            sub,
            &format!("{name}-{}", sub.get_name()),
            &format!("{bin} {}", sub.get_name()),
            out,
        );
    }
}

/// Every generated file, relative to `contrib/`, with its content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let cmd = documented_cli();
    let mut all = Vec::new();
    pages(&cmd, "vfioctl", "vfioctl", &mut all);
    let mut see_also: Vec<String> = all.iter().map(|(n, _)| format!("{n}(1)")).collect();
    see_also.push("vfio.toml(5)".into());
    for (name, page) in &all {
        files.push((
            PathBuf::from(format!("man/{name}.1")),
            render_man(page, name, &see_also),
        ));
    }
    // Completions: hidden plumbing (udev-claim, benchmarks) is left out of the tree itself,
    // since clap_complete completes hidden subcommands too.
    // clap names are `&'static str` without clap's "string" feature; this is a test.
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let mut visible = Command::new("vfioctl")
        .version(leak(cmd.get_version().unwrap_or_default()))
        .args(cmd.get_arguments().cloned())
        // The built tree's arguments already hold --help and --version.
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut sub = sub.clone();
        let hidden: Vec<String> = sub
            .get_subcommands()
            .filter(|s| s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect();
        if !hidden.is_empty() {
            let kept: Vec<Command> = sub
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned()
                .collect();
            let mut fresh = Command::new(leak(sub.get_name()))
                .version(leak(cmd.get_version().unwrap_or_default()))
                .args(sub.get_arguments().cloned())
                .disable_help_flag(true)
                .disable_version_flag(true)
                .disable_help_subcommand(true)
                .subcommands(kept);
            if let Some(about) = sub.get_about() {
                fresh = fresh.about(about.clone());
            }
            sub = fresh;
        }
        visible = visible.subcommand(sub);
    }
    for (shell, file) in [
        (Shell::Bash, "vfioctl.bash"),
        (Shell::Zsh, "_vfioctl"),
        (Shell::Fish, "vfioctl.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut visible.clone(), "vfioctl", &mut out);
        files.push((PathBuf::from("completions").join(file), out));
    }
    files
}

/// Man pages that are written by hand (not from clap), relative to `contrib/`.
const HAND_WRITTEN: &[&str] = &["man/vfio.toml.5"];

#[test]
fn man_pages_and_completions_match_the_cli_definition() {
    let bless = std::env::var_os("VFIOCTL_BLESS").is_some();
    let mut drifted = Vec::new();
    let files = generated();
    // A page in contrib/man that nothing generates (a command that went away) is stale.
    for entry in std::fs::read_dir(contrib().join("man")).unwrap() {
        let rel = PathBuf::from("man").join(entry.unwrap().file_name());
        let known = files.iter().any(|(p, _)| *p == rel)
            || HAND_WRITTEN.iter().any(|h| Path::new(h) == rel);
        if known {
            continue;
        }
        if bless {
            std::fs::remove_file(contrib().join(&rel)).unwrap();
        } else {
            drifted.push(format!("{} (stale)", rel.display()));
        }
    }
    for (rel, content) in files {
        let path = contrib().join(&rel);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            drifted.push(rel.display().to_string());
        }
    }
    assert!(
        drifted.is_empty(),
        "out of date with the CLI definition: {drifted:?}\n\
         regenerate with: VFIOCTL_BLESS=1 cargo test --test watch_contrib"
    );
}

#[test]
fn generated_pages_document_the_watch_options() {
    let (_, page) = generated()
        .into_iter()
        .find(|(p, _)| p.ends_with("vfioctl-watch.1"))
        .expect("a page for watch");
    let page = String::from_utf8(page).unwrap();
    for option in ["resync", "debounce", "config"] {
        assert!(page.contains(option), "watch page lacks --{option}");
    }
    // Hidden plumbing for the udev rule gets no man page (clap_complete still completes it).
    let pages: Vec<(PathBuf, String)> = generated()
        .into_iter()
        .filter(|(p, _)| p.starts_with("man"))
        .map(|(p, c)| (p, String::from_utf8(c).unwrap()))
        .collect();
    assert!(pages.len() > 5);
    for (path, page) in &pages {
        assert!(
            !page.contains("udev\\-claim"),
            "{} mentions udev-claim",
            path.display()
        );
    }
    // Global flags reach every subcommand's page.
    assert!(
        page.contains("sysfs"),
        "watch page lacks the global --sysfs-root"
    );
}

/// The `vfioctl ...` command lines in a contrib file, with udev's `$kernel` filled in.
fn command_lines(file: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("/usr/bin/vfioctl ") {
            let tail = &rest[at + "/usr/bin/".len()..];
            let end = tail.find('"').unwrap_or(tail.len());
            let words = tail[..end]
                .split_whitespace()
                .map(|w| w.replace("$kernel", "0000:03:00.0"))
                .collect();
            lines.push(words);
            rest = &tail[end..];
        }
    }
    lines
}

#[test]
fn command_lines_in_udev_rules_and_units_parse() {
    let files = [
        contrib().join("udev/70-vfioctl.rules"),
        contrib().join("systemd/vfioctl-watch.service"),
    ];
    let mut seen = 0;
    for file in &files {
        for words in command_lines(file) {
            seen += 1;
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!(
                    "{}: `{}` does not parse:\n{e}",
                    file.display(),
                    words.join(" ")
                );
            }
        }
    }
    assert!(
        seen >= 3,
        "expected the claim, the reconcile and the watch lines, found {seen}"
    );
}

/// The `page(section)` references in a roff page (`\fBvfioctl\-watch\fR(1)`, `vfioctl\-domain\-open(1)`).
fn references(page: &str) -> Vec<String> {
    let plain = page
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\-", "-");
    let mut refs = Vec::new();
    for (i, _) in plain.match_indices('(') {
        let section = plain[i + 1..].split(')').next().unwrap_or("");
        if !matches!(section, "1" | "5" | "7" | "8") {
            continue;
        }
        let name: String = plain[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !name.is_empty() {
            refs.push(format!("{name}.{section}"));
        }
    }
    refs
}

#[test]
fn man_pages_refer_only_to_pages_that_exist_and_give_every_exit_status() {
    let dir = contrib().join("man");
    let mut ours: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ours.sort();
    assert!(ours.contains(&"vfio.toml.5".to_string()), "{ours:?}");
    assert!(
        ours.contains(&"vfioctl-domain-open.1".to_string()),
        "{ours:?}"
    );
    assert!(!ours.iter().any(|p| p.contains("help")), "{ours:?}");
    // Pages of other packages a vfioctl page may name.
    let others = [
        "systemctl.1",
        "journalctl.1",
        "udev.7",
        "systemd.exec.5",
        "toml.5",
    ];
    for name in &ours {
        let page = std::fs::read_to_string(dir.join(name)).unwrap();
        for r in references(&page) {
            assert!(
                ours.contains(&r) || others.contains(&r.as_str()),
                "{name} refers to {r}, which does not exist"
            );
        }
        if name.ends_with(".1") {
            assert!(
                page.contains(".SH \"EXIT STATUS\""),
                "{name}: no EXIT STATUS"
            );
            for code in 0..=4 {
                assert!(
                    page.contains(&format!(".TP\n{code}\n")),
                    "{name}: no exit {code}"
                );
            }
        }
    }
    let root = std::fs::read_to_string(dir.join("vfioctl.1")).unwrap();
    for section in ["ENVIRONMENT", "FILES", "EXAMPLES", "\"SEE ALSO\""] {
        assert!(
            root.contains(&format!(".SH {section}")),
            "vfioctl.1: no {section}"
        );
    }
    let config = std::fs::read_to_string(dir.join("vfio.toml.5")).unwrap();
    for section in ["DESCRIPTION", "FILES", "EXAMPLES", "\"SEE ALSO\""] {
        assert!(
            config.contains(&format!(".SH {section}")),
            "vfio.toml.5: no {section}"
        );
    }
}

#[test]
fn completions_leave_hidden_plumbing_out() {
    for file in ["vfioctl.bash", "_vfioctl", "vfioctl.fish"] {
        let text = std::fs::read_to_string(contrib().join("completions").join(file)).unwrap();
        for hidden in ["udev-claim", "udev_claim", "bench-map", "bench-open"] {
            assert!(!text.contains(hidden), "{file} completes {hidden}");
        }
        assert!(
            text.contains("reconcile") && text.contains("open"),
            "{file}"
        );
    }
}
