//! `make bench`: parse throughput on one thread over a generated 1M-line mail log (~10% abuse lines), all
//! built-in rule files loaded; then `floodgate parse` (the command, both cores) against fail2ban-regex with
//! fail2ban's Postfix filter on the same 200k-line file, side by side, when fail2ban is installed (its server is
//! never started). Prints figures; asserts nothing about speed.

use std::time::Instant;

use floodgate::config::Config;
use floodgate::parse::header::{TimeContext, Zone};
use floodgate::parse::lines::{Line, LineReader};
use floodgate::parse::{LineParser, Outcome};
use floodgate_lab::gen;

fn main() {
    let lines: usize = std::env::var("BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let log = gen::mail_log(lines, 42);
    let cfg = Config::default();
    let ctx = TimeContext::system(Zone::parse("UTC").unwrap());
    let mut best = f64::MAX;
    let mut events = 0;
    for _ in 0..5 {
        let mut parser = LineParser::from_config(cfg.parsing(), &[], ctx).expect("built-in rules load");
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
    let parser = LineParser::from_config(cfg.parsing(), &[], ctx).unwrap();
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
    side_by_side();
}

/// The command against fail2ban-regex on one file: best of three for floodgate, one run for fail2ban-regex
/// (tens of seconds). Output goes to /dev/null for both.
fn side_by_side() {
    let lines: usize = std::env::var("BENCH_F2B_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("floodgate-parse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mail.log");
    std::fs::write(&file, gen::mail_log(lines, 7)).unwrap();
    let time = |cmd: &mut std::process::Command| -> Option<f64> {
        let t = Instant::now();
        let ok = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().ok()?.success();
        ok.then(|| t.elapsed().as_secs_f64())
    };
    let ours = (0..3)
        .filter_map(|_| time(std::process::Command::new(env!("CARGO_BIN_EXE_floodgate")).arg("parse").arg(&file)))
        .fold(f64::MAX, f64::min);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "parse: `floodgate parse` on {lines} lines: {ours:.3} s = {:.0}k lines/s ({cores} cores, start-up included)",
        lines as f64 / ours / 1e3
    );
    let filter = ["/etc/fail2ban/filter.d/postfix.conf"].into_iter().find(|f| std::path::Path::new(f).exists());
    match (which("fail2ban-regex"), filter) {
        (Some(f2b), Some(filter)) => match time(std::process::Command::new(f2b).arg(&file).arg(filter)) {
            Some(theirs) => println!(
                "parse: fail2ban-regex (postfix filter alone) on the same file: {theirs:.2} s = {:.0}k lines/s; \
                 floodgate parse is {:.1}x faster",
                lines as f64 / theirs / 1e3,
                theirs / ours
            ),
            None => println!("parse: fail2ban-regex failed; no side-by-side figure"),
        },
        _ => println!("parse: fail2ban-regex not installed (apt-get install fail2ban); no side-by-side figure"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(cmd)).find(|p| p.exists())
}
