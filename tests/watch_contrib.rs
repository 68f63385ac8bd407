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

fn render_man(cmd: Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .expect("rendering into memory");
    out
}

/// Every generated file, relative to `contrib/`, with its content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut cmd = Cli::command();
    // Propagates global flags and the version into the subcommands.
    cmd.build();
    files.push((PathBuf::from("man/vfioctl.1"), render_man(cmd.clone())));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("vfioctl-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("vfioctl {}", sub.get_name()));
        files.push((PathBuf::from(format!("man/{name}.1")), render_man(page)));
    }
    for (shell, file) in [
        (Shell::Bash, "vfioctl.bash"),
        (Shell::Zsh, "_vfioctl"),
        (Shell::Fish, "vfioctl.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "vfioctl", &mut out);
        files.push((PathBuf::from("completions").join(file), out));
    }
    files
}

#[test]
fn man_pages_and_completions_match_the_cli_definition() {
    let bless = std::env::var_os("VFIOCTL_BLESS").is_some();
    let mut drifted = Vec::new();
    for (rel, content) in generated() {
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
