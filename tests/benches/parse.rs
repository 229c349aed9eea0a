//! `make bench`: parse throughput on one thread over a generated 1M-line mail log (~10% abuse lines), all
//! built-in rule files loaded. Prints figures; asserts nothing about speed.

#[path = "gen.rs"]
mod gen;

use std::time::Instant;

use floodgate::config::Config;
use floodgate::parser::{LineParser, Outcome};
use floodgate::prefix::{TimeContext, Zone};
use floodgate::reader::{Line, LineReader};

fn main() {
    let lines: usize = std::env::var("BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let log = gen::mail_log(lines, 42);
    let cfg = Config::default();
    let ctx = TimeContext::system(Zone::parse("UTC").unwrap());
    let mut best = f64::MAX;
    let mut events = 0;
    for _ in 0..5 {
        let mut parser = LineParser::from_config(&cfg, &[], ctx).expect("built-in rules load");
        let start = Instant::now();
        let mut reader = LineReader::new(&log[..], cfg.parse.max_line_bytes);
        let mut n = 0u64;
        while let Some(line) = reader.next_line().unwrap() {
            if let Line::Text(b) = line {
                if let Outcome::Event(e) = parser.parse_bytes(b) {
                    n += 1;
                    std::hint::black_box(e);
                }
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
        events = n;
    }
    // The prefilter alone: how much of the time goes to finding candidate rules.
    let parser = LineParser::from_config(&cfg, &[], ctx).unwrap();
    let matcher = parser.matcher();
    let mut scratch = matcher.scratch();
    let (mut with_candidates, mut candidates) = (0u64, 0u64);
    let start = Instant::now();
    let mut reader = LineReader::new(&log[..], cfg.parse.max_line_bytes);
    while let Some(line) = reader.next_line().unwrap() {
        if let Line::Text(b) = line {
            let c = matcher.candidates(std::str::from_utf8(b).unwrap_or(""), &mut scratch).len() as u64;
            with_candidates += u64::from(c > 0);
            candidates += c;
        }
    }
    let pre = start.elapsed().as_secs_f64();
    println!(
        "parse: prefilter alone {pre:.3} s = {:.2} M lines/s; {:.1}% of lines reach a regex, {:.2} candidate rules per such line",
        lines as f64 / pre / 1e6,
        100.0 * with_candidates as f64 / lines as f64,
        candidates as f64 / with_candidates.max(1) as f64
    );
    let rules = matcher.rules.len();
    let rate = lines as f64 / best;
    println!("parse: {lines} lines ({:.1} MiB), {rules} rules, {events} events", log.len() as f64 / 1048576.0);
    println!(
        "parse: best of 5: {best:.3} s = {:.2} M lines/s, {:.0} MiB/s on one thread",
        rate / 1e6,
        log.len() as f64 / 1048576.0 / best
    );
    println!("parse: {:.1}x fail2ban-regex's ~85k lines/s (postfix filter alone)", rate / 85_000.0);
}
