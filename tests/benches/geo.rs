//! `make bench`: country ranges, from files to the kernel. A generated file shaped like the five RIRs'
//! delegated-extended statistics together (BENCH_GEO_LINES, default 250,000 lines: ~240 countries, skewed, many
//! adjacent ranges; see tests/lab/src/geo_gen.rs) is parsed and merged, then loaded into floodgate's own table in
//! a private network namespace (the host's ruleset is never touched), each load one netlink batch:
//!
//! - allow-only: one service restricted to the country holding the most space (the sets hold that country);
//! - deny-list: one service denying every country but one (the sets hold nearly the whole file: the largest
//!   load a config can ask for);
//! - reload: the deny-list again (flush and refill in one transaction, what `geo update` does daily).
//!
//! Peak memory is the process's VmHWM, reset (`/proc/self/clear_refs`) before each phase, so each figure is
//! that phase's own peak: the generated file itself (held in memory) is counted in all of them.
//! Needs root for the kernel part; without it, prints why and stops after the parse.

use std::time::{Duration, Instant};

use floodgate::config::Config;
use floodgate::enforce::Enforcer;
use floodgate::geo::fetch::{Format, Source};
use floodgate::geo::GeoDb;
use floodgate_lab::{geo_gen, netns, proc_memory};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// VmRSS and VmHWM in MiB.
fn memory() -> (f64, f64) {
    let (rss, hwm) = proc_memory::memory();
    (rss as f64 / 1024.0, hwm as f64 / 1024.0)
}

fn reset_peak() {
    // "5" resets the peak resident set size to the current one (proc(5)).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let lines = env("BENCH_GEO_LINES", 250_000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = geo_gen::rir_file(lines, 42);
    let path = dir.path().join("delegated-all-extended-latest");
    std::fs::write(&path, &text).expect("write the generated file");
    let source = Source { url: format!("file://{}", path.display()), format: Format::Rir, country: None, name: None };
    println!(
        "geo: generated {} lines ({:.1} MiB) shaped like the five RIRs' delegated-extended files",
        text.lines().count(),
        text.len() as f64 / 1048576.0
    );

    reset_peak();
    let base = memory().0;
    let mut best = Duration::MAX;
    let mut db = GeoDb::new();
    let mut records = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let parsed = source.parse(&text, "generated").expect("the generated file parses");
        records = parsed.records;
        let mut d = GeoDb::new();
        d.add(parsed);
        let (v4, v6) = d.len();
        std::hint::black_box((v4, v6));
        best = best.min(t.elapsed());
        db = d;
    }
    let (v4, v6) = db.len();
    println!(
        "geo: parse + merge, best of 3: {:.3} s = {:.0}k lines/s; {records} address records -> {v4} IPv4 + {v6} IPv6 \
         merged ranges over {} countries; peak +{:.1} MiB over the {:.1} MiB before",
        best.as_secs_f64(),
        lines as f64 / best.as_secs_f64() / 1e3,
        db.countries().len(),
        memory().1 - base,
        base
    );

    if !netns::private_netns("geo: kernel load") {
        return;
    }
    let countries = db.countries();
    let biggest = countries
        .iter()
        .max_by_key(|c| {
            let (a, b) = db.ranges(&[**c]);
            a.len() + b.len()
        })
        .copied()
        .expect("countries");
    let all_but_one: Vec<String> = countries.iter().filter(|c| **c != biggest).map(|c| format!("\"{c}\"")).collect();
    let geo_dir = dir.path().join("cache");
    std::fs::create_dir_all(&geo_dir).unwrap();
    std::fs::copy(&path, geo_dir.join(source.cache_name())).unwrap();
    let config = |restriction: &str| {
        let toml = format!(
            "[services.imap]\nports = [993]\n{restriction}\n[services.smtp]\nports = [25]\n\
             [geo]\ndir = \"{}\"\nsources = [{{ url = \"{}\" }}]\n",
            geo_dir.display(),
            source.url
        );
        Config::from_toml(&toml, "bench.toml").expect("bench config")
    };
    for (name, restriction) in [
        (format!("allow-only {biggest}"), format!("countries = [\"{biggest}\"]")),
        (format!("deny {} countries", all_but_one.len()), format!("deny_countries = [{}]", all_but_one.join(", "))),
    ] {
        let cfg = config(&restriction);
        let mut e = Enforcer::open(&cfg.enforcement()).expect("netlink");
        // The first sync installs the table; the timed ones replace loaded sets, as a daily update does.
        e.sync_geo().expect("first load");
        let mut times = Vec::new();
        let mut loaded = Vec::new();
        reset_peak();
        let before = memory().0;
        for _ in 0..3 {
            let t = Instant::now();
            loaded = e.sync_geo().expect("load");
            times.push(t.elapsed());
        }
        times.sort();
        let l = &loaded[0];
        assert!(l.active, "the service is enforced");
        println!(
            "geo: {name}: {} IPv4 + {} IPv6 ranges: files -> kernel (read, parse, merge, one batch) median {:.3} s, \
             process peak RSS {:.1} MiB (+{:.1} over the {:.1} MiB resident before)",
            l.ranges_v4,
            l.ranges_v6,
            times[1].as_secs_f64(),
            memory().1,
            memory().1 - before,
            before
        );
        // The batch alone: the same sets again, without reading the files.
        let (r4, r6) = db.ranges(&if restriction.starts_with("countries") {
            vec![biggest]
        } else {
            countries.iter().copied().filter(|c| *c != biggest).collect()
        });
        let sets = vec![floodgate::enforce::geo::GeoSets { rule: cfg.ruleset().geo[0].clone(), v4: r4, v6: r6 }];
        let t = Instant::now();
        e.load_geo(&sets).expect("load");
        println!("geo: {name}: the swap alone (flush + refill, one transaction) {:.3} s", t.elapsed().as_secs_f64());
    }
}
