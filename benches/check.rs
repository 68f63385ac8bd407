//! The config checks at scale: a config of 40,000 devices and a user listing all of them
//! (issue 15: the duplicate checks were pairwise, 3 s at this size; now one hash lookup each).

use std::fmt::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

fn large(n: usize) -> String {
    let mut s = String::from("version = 1\n");
    for i in 0..n {
        let addr = format!("0000:{:02x}:{:02x}.{}", 1 + i / 256, (i % 256) / 8, i % 8);
        writeln!(s, "[[device]]\nname = \"dev{i}\"\naddress = \"{addr}\"").unwrap();
    }
    s.push_str("[[user]]\nname = \"1000\"\ndevices = [");
    for i in 0..n {
        write!(s, "\"dev{i}\", ").unwrap();
    }
    s.push_str("]\n");
    s
}

fn bench(c: &mut Criterion) {
    let text = large(40_000);
    let checked = vfioctl::config::check_str(&text, Path::new("big.toml"));
    assert!(checked.config.is_some(), "the generated config is valid");
    let mut g = c.benchmark_group("check");
    g.sample_size(10);
    g.bench_function("check 40000 devices", |b| {
        b.iter(|| vfioctl::config::check_str(&text, Path::new("big.toml")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
