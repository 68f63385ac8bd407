//! The watch loop driven by a scripted event source on a virtual clock, a recording reconciler,
//! a config "file" the script rewrites, and a recording service notifier.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vfioctl::config::{Config, DeviceSpec, Origin, Selector};
use vfioctl::pci::PciAddress;
use vfioctl::watch::{
    ConfigRejected, ConfigState, DeviceAction, DeviceEvent, Event, EventSource, Outcome,
    Reconciler, Scope, ServiceNotifier, Timing, WatchError, WatchLoop,
};

type File = Result<Config, ConfigRejected>;

/// One scripted moment: at `at` (from the start), the config file may be rewritten and events
/// are delivered.
struct Step {
    at: Duration,
    file: Option<File>,
    events: Vec<Event>,
}

struct World {
    start: Instant,
    now: Rc<Cell<Instant>>,
    file: Rc<RefCell<File>>,
}

struct ScriptedSource {
    start: Instant,
    now: Rc<Cell<Instant>>,
    file: Rc<RefCell<File>>,
    script: VecDeque<Step>,
    waits: Rc<RefCell<Vec<Option<Duration>>>>,
}

impl EventSource for ScriptedSource {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>, WatchError> {
        self.waits.borrow_mut().push(timeout);
        assert!(self.waits.borrow().len() < 10_000, "the loop never settles");
        let now = self.now.get();
        let next_at = self.script.front().map(|s| self.start + s.at);
        let step_due = next_at.is_some_and(|at| timeout.map_or(true, |t| at <= now + t));
        if step_due {
            let step = self.script.pop_front().expect("a step is due");
            self.now.set((self.start + step.at).max(now));
            if let Some(file) = step.file {
                *self.file.borrow_mut() = file;
            }
            return Ok(step.events);
        }
        let t =
            timeout.expect("script exhausted while the loop waits forever; end it with Terminate");
        self.now.set(now + t);
        Ok(Vec::new())
    }

    fn now(&self) -> Instant {
        self.now.get()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Pass {
    at_ms: u128,
    version: u32,
    scope: Scope,
}

struct RecordingReconciler {
    start: Instant,
    now: Rc<Cell<Instant>>,
    passes: Vec<Pass>,
    /// Outcomes to return, first to last; `Converged` once exhausted.
    outcomes: VecDeque<Outcome>,
}

impl Reconciler for RecordingReconciler {
    fn reconcile(&mut self, config: &Config, scope: Scope) -> Outcome {
        self.passes.push(Pass {
            at_ms: (self.now.get() - self.start).as_millis(),
            version: config.version,
            scope,
        });
        self.outcomes.pop_front().unwrap_or(Outcome::Converged {
            changed: 0,
            waiting: 0,
            problems: 0,
        })
    }
}

#[derive(Default)]
struct RecordingNotifier {
    sent: Vec<String>,
    watchdog: Option<Duration>,
}

impl ServiceNotifier for RecordingNotifier {
    fn ready(&mut self) {
        self.sent.push("READY".into());
    }
    fn reloading(&mut self) {
        self.sent.push("RELOADING".into());
    }
    fn stopping(&mut self) {
        self.sent.push("STOPPING".into());
    }
    fn status(&mut self, status: &str) {
        self.sent.push(format!("STATUS={status}"));
    }
    fn watchdog(&mut self) {
        self.sent.push("WATCHDOG".into());
    }
    fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A config marked by `version`, claiming the given addresses.
fn config(version: u32, claimed: &[&str]) -> Config {
    Config {
        version,
        devices: claimed
            .iter()
            .enumerate()
            .map(|(i, a)| DeviceSpec {
                name: format!("dev{i}"),
                selector: Selector::Address(addr(a)),
                driver: "vfio-pci".into(),
                companions: vec![],
                force: false,
                origin: Origin::default(),
            })
            .collect(),
        ..Config::default()
    }
}

fn invalid() -> File {
    Err(ConfigRejected {
        path: "/etc/vfio.toml".into(),
        report: "error: unknown key `devcie` at line 2".into(),
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn step(at_ms: u64, events: Vec<Event>) -> Step {
    Step {
        at: ms(at_ms),
        file: None,
        events,
    }
}

fn rewrite(at_ms: u64, file: File, events: Vec<Event>) -> Step {
    Step {
        at: ms(at_ms),
        file: Some(file),
        events,
    }
}

fn device(action: DeviceAction, a: &str, driver: Option<&str>) -> Event {
    Event::Device(DeviceEvent {
        action,
        address: addr(a),
        ids: None,
        driver: driver.map(str::to_owned),
    })
}

struct Run {
    passes: Vec<Pass>,
    sent: Vec<String>,
    waits: Vec<Option<Duration>>,
    final_version: u32,
}

fn timing(resync: Option<Duration>) -> Timing {
    Timing {
        debounce: ms(200),
        max_delay: ms(2000),
        resync,
        retry_min: ms(500),
        retry_max: ms(4000),
    }
}

fn run(initial: Config, timing: Timing, outcomes: Vec<Outcome>, script: Vec<Step>) -> Run {
    run_with(
        initial,
        timing,
        outcomes,
        script,
        RecordingNotifier::default(),
    )
}

fn run_with(
    initial: Config,
    timing: Timing,
    outcomes: Vec<Outcome>,
    script: Vec<Step>,
    notifier: RecordingNotifier,
) -> Run {
    let start = Instant::now();
    let world = World {
        start,
        now: Rc::new(Cell::new(start)),
        file: Rc::new(RefCell::new(Ok(initial))),
    };
    let waits = Rc::new(RefCell::new(Vec::new()));
    let source = ScriptedSource {
        start,
        now: world.now.clone(),
        file: world.file.clone(),
        script: script.into(),
        waits: waits.clone(),
    };
    let reconciler = RecordingReconciler {
        start,
        now: world.now.clone(),
        passes: Vec::new(),
        outcomes: outcomes.into(),
    };
    let file = world.file.clone();
    let mut loader = move |_: &Path| file.borrow().clone();
    let state = ConfigState::load(Path::new("/etc/vfio.toml"), &mut loader).unwrap();
    let mut watch = WatchLoop::new(source, reconciler, loader, notifier, state, timing);
    watch.run().unwrap();
    let _ = world.start;
    let waits = waits.borrow().clone();
    Run {
        passes: watch.reconciler().passes.clone(),
        sent: watch.notifier().sent.clone(),
        waits,
        final_version: watch.config().current().version,
    }
}

fn full(at_ms: u128, version: u32) -> Pass {
    Pass {
        at_ms,
        version,
        scope: Scope::All,
    }
}

#[test]
fn first_pass_runs_before_ready_and_idle_waits_forever() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![step(5000, vec![Event::Terminate])],
    );
    assert_eq!(r.passes, vec![full(0, 1)]);
    assert!(
        r.sent[0].starts_with("STATUS=converged (0 changes); no domains held; last pass"),
        "{:?}",
        r.sent
    );
    assert_eq!(r.sent[1], "READY");
    assert_eq!(r.sent.last().map(String::as_str), Some("STOPPING"));
    // Nothing pending and no resync: the loop blocks without a timeout (no polling).
    assert_eq!(r.waits, vec![None]);
}

#[test]
fn a_burst_of_uevents_coalesces_into_one_pass() {
    let burst = vec![
        step(
            1000,
            vec![device(DeviceAction::Unbind, "0000:02:01.0", None)],
        ),
        step(
            1050,
            vec![device(DeviceAction::Bind, "0000:02:01.0", Some("vfio-pci"))],
        ),
        step(
            1100,
            vec![
                Event::VfioNode,
                device(DeviceAction::Change, "0000:02:02.0", None),
            ],
        ),
        step(5000, vec![Event::Terminate]),
    ];
    let r = run(config(1, &[]), timing(None), vec![], burst);
    assert_eq!(r.passes, vec![full(0, 1), full(1300, 1)]);
}

#[test]
fn a_configured_device_that_appears_is_claimed_at_once_in_its_own_scope() {
    let r = run(
        config(1, &["0000:03:00.0"]),
        timing(None),
        vec![Outcome::Converged {
            changed: 0,
            waiting: 1,
            problems: 0,
        }],
        vec![
            step(1000, vec![device(DeviceAction::Add, "0000:03:00.0", None)]),
            step(
                1020,
                vec![device(DeviceAction::Bind, "0000:03:00.0", Some("e1000e"))],
            ),
            step(5000, vec![Event::Terminate]),
        ],
    );
    let dev = |at_ms| Pass {
        at_ms,
        version: 1,
        scope: Scope::Device(addr("0000:03:00.0")),
    };
    // Absent at start: a waiting status, not an error.
    assert!(
        r.sent[0].contains("waiting for 1 absent device"),
        "{:?}",
        r.sent
    );
    // ... what is held and when that pass ran.
    assert!(
        r.sent[0].contains("; no domains held; last pass (all devices) at "),
        "{:?}",
        r.sent
    );
    // add -> scoped pass immediately; the host driver grabbing it -> again immediately;
    // then one debounced full pass for the burst.
    assert_eq!(
        r.passes,
        vec![full(0, 1), dev(1000), dev(1020), full(1220, 1)]
    );
}

#[test]
fn events_for_unconfigured_devices_are_not_urgent() {
    let r = run(
        config(1, &["0000:03:00.0"]),
        timing(None),
        vec![],
        vec![
            step(1000, vec![device(DeviceAction::Add, "0000:04:00.0", None)]),
            step(
                1001,
                vec![device(DeviceAction::Bind, "0000:03:00.0", Some("vfio-pci"))],
            ),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(r.passes, vec![full(0, 1), full(1201, 1)]);
}

#[test]
fn an_edited_config_is_applied_once_the_save_settles() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![
            // An editor's save: temp file written, renamed over the old one.
            step(1000, vec![Event::ConfigChanged]),
            rewrite(
                1010,
                Ok(config(2, &["0000:03:00.0"])),
                vec![Event::ConfigChanged],
            ),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(r.passes, vec![full(0, 1), full(1210, 2)]);
    assert_eq!(r.final_version, 2);
}

#[test]
fn an_invalid_config_changes_nothing_and_the_last_good_one_stays() {
    let r = run(
        config(1, &["0000:03:00.0"]),
        timing(None),
        vec![],
        vec![
            rewrite(1000, invalid(), vec![Event::ConfigChanged]),
            // The host changes while the bad file is in place: reconciled with the last good.
            step(2000, vec![device(DeviceAction::Add, "0000:03:00.0", None)]),
            rewrite(3000, Ok(config(3, &[])), vec![Event::ConfigChanged]),
            step(5000, vec![Event::Terminate]),
        ],
    );
    let dev = Pass {
        at_ms: 2000,
        version: 1,
        scope: Scope::Device(addr("0000:03:00.0")),
    };
    assert_eq!(
        r.passes,
        vec![full(0, 1), dev, full(2200, 1), full(3200, 3)],
        "no pass for the rejected file; the device event still used the last good config"
    );
    assert!(
        r.sent
            .iter()
            .any(|s| s.contains("invalid; keeping generation 1")),
        "{:?}",
        r.sent
    );
}

#[test]
fn a_config_edit_that_does_not_change_the_desired_state_is_no_pass() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![
            rewrite(1000, Ok(config(1, &[])), vec![Event::ConfigChanged]),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(r.passes, vec![full(0, 1)]);
}

#[test]
fn sighup_reloads_at_once_and_reports_reloading_then_ready() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![
            rewrite(1000, Ok(config(2, &[])), vec![Event::Reload]),
            rewrite(2000, invalid(), vec![Event::Reload]),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(r.passes, vec![full(0, 1), full(1000, 2)]);
    assert_eq!(r.final_version, 2);
    let protocol: Vec<&str> = r
        .sent
        .iter()
        .map(|s| {
            if s.starts_with("STATUS=") {
                "STATUS"
            } else {
                s.as_str()
            }
        })
        .collect();
    assert_eq!(
        protocol,
        vec![
            "STATUS",
            "READY", // first pass
            "RELOADING",
            "STATUS",
            "READY", // valid reload: pass, status
            "RELOADING",
            "STATUS",
            "READY", // invalid reload: status says so, no pass
            "STOPPING"
        ]
    );
    assert!(r.sent[6].contains("invalid"), "{}", r.sent[6]);
}

#[test]
fn resync_fires_periodically_without_events() {
    let r = run(
        config(1, &[]),
        timing(Some(Duration::from_secs(60))),
        vec![],
        vec![step(130_000, vec![Event::Terminate])],
    );
    assert_eq!(
        r.passes,
        vec![full(0, 1), full(60_000, 1), full(120_000, 1)]
    );
}

#[test]
fn a_full_pass_pushes_the_next_resync_back() {
    let r = run(
        config(1, &[]),
        timing(Some(Duration::from_secs(60))),
        vec![],
        vec![
            step(30_000, vec![Event::VfioNode]),
            step(100_000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(r.passes, vec![full(0, 1), full(30_200, 1), full(90_200, 1)]);
}

#[test]
fn a_failed_pass_is_retried_with_backoff_until_it_converges() {
    let fail = || Outcome::Failed("unbind timed out".into());
    let r = run(
        config(1, &[]),
        timing(None),
        vec![fail(), fail(), fail()],
        vec![step(10_000, vec![Event::Terminate])],
    );
    assert_eq!(
        r.passes,
        vec![full(0, 1), full(500, 1), full(1500, 1), full(3500, 1)]
    );
    assert!(r.sent.iter().any(|s| s.contains("unbind timed out")));
}

#[test]
fn a_held_lock_is_retried_soon() {
    let r = run(
        config(1, &["0000:03:00.0"]),
        timing(None),
        vec![
            Outcome::Converged {
                changed: 0,
                waiting: 0,
                problems: 0,
            },
            Outcome::Busy,
        ],
        vec![
            step(1000, vec![device(DeviceAction::Add, "0000:03:00.0", None)]),
            step(10_000, vec![Event::Terminate]),
        ],
    );
    // The scoped pass found `reconcile --device` (from the udev rule) holding the lock: a full
    // retry 500 ms later also covers the debounced pass for the burst.
    assert_eq!(
        r.passes,
        vec![
            full(0, 1),
            Pass {
                at_ms: 1000,
                version: 1,
                scope: Scope::Device(addr("0000:03:00.0"))
            },
            full(1200, 1),
        ]
    );
}

#[test]
fn a_new_config_makes_its_devices_urgent() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![
            rewrite(1000, Ok(config(2, &["0000:03:00.0"])), vec![Event::Reload]),
            step(2000, vec![device(DeviceAction::Add, "0000:03:00.0", None)]),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(
        r.passes,
        vec![
            full(0, 1),
            full(1000, 2),
            Pass {
                at_ms: 2000,
                version: 2,
                scope: Scope::Device(addr("0000:03:00.0"))
            },
            full(2200, 2),
        ]
    );
}

#[test]
fn a_config_edit_inside_a_burst_of_uevents_is_not_lost() {
    let r = run(
        config(1, &[]),
        timing(None),
        vec![],
        vec![
            step(
                1000,
                vec![device(DeviceAction::Unbind, "0000:01:00.0", None)],
            ),
            rewrite(1050, invalid(), vec![Event::ConfigChanged]),
            step(
                1100,
                vec![device(DeviceAction::Bind, "0000:01:00.0", Some("vfio-pci"))],
            ),
            rewrite(3000, Ok(config(2, &[])), vec![Event::ConfigChanged]),
            step(3010, vec![Event::VfioNode]),
            step(5000, vec![Event::Terminate]),
        ],
    );
    // The burst's pass runs with the last good config, and the rejection is reported.
    assert!(r.sent.iter().any(|s| s.contains("invalid")), "{:?}", r.sent);
    // The valid edit riding a burst is taken before that burst's pass.
    assert_eq!(r.passes, vec![full(0, 1), full(1300, 1), full(3210, 2)]);
}

#[test]
fn only_the_newest_uevent_of_a_batch_decides_urgency() {
    let r = run(
        config(1, &["0000:03:00.0", "0000:04:00.0"]),
        timing(None),
        vec![],
        vec![
            // 03:00.0 was grabbed by its host driver, and someone (the udev rule) already
            // moved it to vfio-pci: no pass of its own. 04:00.0 came and was grabbed: urgent.
            step(
                1000,
                vec![
                    device(DeviceAction::Bind, "0000:03:00.0", Some("e1000e")),
                    device(DeviceAction::Unbind, "0000:03:00.0", None),
                    device(DeviceAction::Bind, "0000:03:00.0", Some("vfio-pci")),
                    device(DeviceAction::Add, "0000:04:00.0", None),
                    device(DeviceAction::Bind, "0000:04:00.0", Some("e1000e")),
                ],
            ),
            step(5000, vec![Event::Terminate]),
        ],
    );
    assert_eq!(
        r.passes,
        vec![
            full(0, 1),
            Pass {
                at_ms: 1000,
                version: 1,
                scope: Scope::Device(addr("0000:04:00.0"))
            },
            full(1200, 1),
        ]
    );
}

#[test]
fn the_watchdog_is_pinged_at_half_its_period_even_when_idle() {
    let notifier = RecordingNotifier {
        watchdog: Some(Duration::from_secs(10)),
        ..RecordingNotifier::default()
    };
    let r = run_with(
        config(1, &[]),
        timing(None),
        vec![],
        vec![step(21_000, vec![Event::Terminate])],
        notifier,
    );
    let pings = r.sent.iter().filter(|s| *s == "WATCHDOG").count();
    // At 0, 5, 10, 15 and 20 s.
    assert_eq!(pings, 5, "{:?}", r.sent);
    assert!(
        r.waits.iter().all(|w| *w == Some(Duration::from_secs(5))),
        "{:?}",
        r.waits
    );
    assert_eq!(r.passes, vec![full(0, 1)], "pings are not passes");
}

/// A storm: 10,000 uevents over ten seconds (five every 5 ms) for 500 functions the config
/// does not name, with a configured function re-added every 1,000 events. The loop runs one
/// full pass per `max_delay` while the storm lasts and one after it ends (nothing is lost: the
/// last pass starts after the last event), and one scoped pass per batch with a configured add.
#[test]
fn ten_thousand_uevents_coalesce_into_a_few_passes() {
    let configured = "0000:03:00.0";
    let mut script = Vec::new();
    let mut sent = 0;
    let mut adds = 0;
    for s in 0..2000u64 {
        let mut events = Vec::new();
        for _ in 0..5 {
            let n = sent;
            sent += 1;
            if n % 1000 == 999 {
                adds += 1;
                events.push(device(DeviceAction::Add, configured, None));
                continue;
            }
            let a = format!("0000:{:02x}:{:02x}.0", 0x10 + (n % 500) / 32, n % 32);
            let action = match n % 4 {
                0 => DeviceAction::Add,
                1 => DeviceAction::Bind,
                2 => DeviceAction::Unbind,
                _ => DeviceAction::Remove,
            };
            events.push(device(action, &a, None));
        }
        script.push(step(1000 + s * 5, events));
    }
    script.push(step(30_000, vec![Event::Terminate]));
    assert_eq!(sent, 10_000);
    let last_event_ms = 1000 + 1999 * 5;
    let r = run(config(1, &[configured]), timing(None), vec![], script);
    let fulls: Vec<&Pass> = r.passes.iter().filter(|p| p.scope == Scope::All).collect();
    let scoped = r.passes.len() - fulls.len();
    // The first pass, one per 2 s of storm, one after it.
    assert!(
        (6..=8).contains(&fulls.len()),
        "{} full passes: {:?}",
        fulls.len(),
        fulls
    );
    let last = fulls.last().unwrap().at_ms;
    assert!(
        last >= last_event_ms && last <= last_event_ms + 200,
        "the last pass at {last} ms, the last event at {last_event_ms} ms"
    );
    assert!(
        (1..=adds).contains(&scoped),
        "{scoped} scoped passes for {adds} configured adds"
    );
    println!(
        "storm-summary test=uevents events={sent} passes={} full={} scoped={scoped}",
        r.passes.len(),
        fulls.len()
    );
}
