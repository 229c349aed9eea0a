//! The Prometheus endpoint end to end, in namespaces: `floodgate run` with `[metrics] listen` on the server
//! namespace's loopback, scraped over HTTP the way Prometheus does; the exposition checked by Prometheus' own
//! linter (`promtool check metrics`), and a ban's kernel drop counter seen rising while the banned address
//! keeps sending.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use floodgate_lab::daemon::Lab;
use floodgate_lab::netns;
use floodgate_lab::skip::skip;
use floodgate_lab::wait::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const LISTEN: &str = "127.0.0.1:9947";

/// One HTTP request inside the server namespace: the status line and the body.
fn http(lab: &Lab, request: &'static str) -> Option<(String, String)> {
    lab.pair.server.enter(move || {
        let mut s = TcpStream::connect(LISTEN).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    })
}

fn scrape(lab: &Lab) -> String {
    let (status, body) = http(lab, "GET /metrics HTTP/1.1\r\nHost: fg\r\n\r\n").expect("a scrape answered");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

fn failure(addr: &str, n: u32) -> String {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!(
        "{now} mx dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
         user=<u{n}>, method=PLAIN, rip={addr}, lip=198.51.100.1, session=<s{n}>"
    )
}

#[test]
fn a_scrape_passes_promtool_and_a_bans_drop_counter_rises_while_the_banned_address_sends() {
    let test = "a_scrape_passes_promtool_and_a_bans_drop_counter_rises_while_the_banned_address_sends";
    if !netns::available(test) {
        return;
    }
    if !Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        skip(test, "promtool (apt-get install prometheus)");
        return;
    }
    let lab = Lab::new("metr", &["203.0.113.7", "203.0.113.8"], BIN);
    lab.pair.listen(143);
    let p = |n: &str| lab.path(n).display().to_string();
    std::fs::write(lab.path("mail.log"), "").unwrap();
    std::fs::write(
        lab.path("floodgate.toml"),
        format!(
            "[sources]\nfiles = [\"{}\"]\nkmsg = false\nnetstat = false\nconntrack = false\n\
             [daemon]\nsocket = \"{}\"\ntick = \"200ms\"\n\
             [metrics]\nlisten = \"{LISTEN}\"\n\
             [services.imap]\nports = [143]\nmaxretry = 3\n",
            p("mail.log"),
            p("fg.sock")
        ),
    )
    .unwrap();
    let _d = lab.start();
    wait_for("the metrics endpoint", Duration::from_secs(5), || http(&lab, "GET /metrics HTTP/1.0\r\n\r\n").is_some());
    let first = scrape(&lab);
    promtool(&first);
    assert_eq!(value(&first, "floodgate_bans_active{origin=\"jail\",family=\"ipv4\"}"), None, "no ban yet: {first}");
    assert_eq!(value(&first, "floodgate_kernel_dropped_packets_total{rule=\"ban\",family=\"ipv4\"}"), Some(0.0));

    let mut log = std::fs::OpenOptions::new().append(true).open(lab.path("mail.log")).unwrap();
    for n in 0..3 {
        writeln!(log, "{}", failure("203.0.113.7", n)).unwrap();
    }
    wait_for("the jail's ban in the kernel", Duration::from_secs(5), || {
        lab.pair.server.nft(&["list", "set", "inet", "floodgate", "ban4"]).contains("203.0.113.7")
    });
    let banned = scrape(&lab);
    let dropped =
        |text: &str| value(text, "floodgate_kernel_dropped_packets_total{rule=\"ban\",family=\"ipv4\"}").unwrap();
    let before = dropped(&banned);
    for _ in 0..3 {
        assert!(!lab.pair.connects("203.0.113.7", 143), "the banned address is dropped");
    }
    assert!(lab.pair.connects("203.0.113.8", 143), "others are served");
    let after = scrape(&lab);
    promtool(&after);
    assert!(dropped(&after) >= before + 3.0, "each refused SYN counted ({before} then {}):\n{after}", dropped(&after));
    let bytes = value(&after, "floodgate_kernel_dropped_bytes_total{rule=\"ban\",family=\"ipv4\"}").unwrap();
    assert!(bytes >= 3.0 * 40.0, "at least a TCP/IP header per dropped SYN: {bytes}");
    assert_eq!(value(&after, "floodgate_bans_active{origin=\"jail\",family=\"ipv4\"}"), Some(1.0), "{after}");
    assert_eq!(value(&after, "floodgate_bans_total{origin=\"jail\",family=\"ipv4\"}"), Some(1.0), "{after}");
    assert_eq!(value(&after, "floodgate_parse_lines_total{result=\"matched\"}"), Some(3.0), "{after}");
    assert!(value(&after, "floodgate_decision_latency_seconds_count").unwrap() >= 1.0, "{after}");
    assert!(after.contains("floodgate_port_mode{port=\"143\",service=\"imap\",mode=\"normal\"} 1"), "{after}");
    assert!(after.lines().any(|l| l.starts_with("floodgate_rule_hits_total{rule=\"dovecot.")), "{after}");
    assert!(!after.contains("203.0.113.7"), "never a label per address");

    let (status, _) = http(&lab, "POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _) = http(&lab, "GET /secret HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}
