//! The geo downloader against a canned HTTP/1.1 server on loopback: a complete valid file replaces the kept
//! copy; every kind of failure (HTTP errors, cut-off and corrupt bodies, oversize, silence, empty) leaves
//! the last good copy byte for byte. Then the database reads back what was stored.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::geo::fetch::{self, Format, Limits, Outcome, Source};
use floodgate::geo::parse::parse_rir;
use floodgate::geo::{Country, GeoDb};
use floodgate_lab::geo_gen;

const GOOD: &str = "\
2.3|apnic|20261120|5|19830613|20261119|+1000
apnic|*|asn|*|1|summary
apnic|*|ipv4|*|3|summary
apnic|*|ipv6|*|1|summary
apnic|JP|asn|64500|1|20100101|allocated|A91A7381
apnic|JP|ipv4|198.51.100.0|256|20100101|allocated|A91A7381
apnic|JP|ipv4|198.18.0.0|768|20100101|assigned|A91A7381
apnic|ZZ|ipv4|203.0.113.0|256||available
apnic|AU|ipv6|2001:db8::|32|20110101|allocated|A9116F50
";

/// What the server answers on one path.
#[derive(Clone)]
enum Reply {
    /// A status and a body, with its Content-Length.
    Full(u16, Vec<u8>),
    /// Content-Length claims more than is sent; then the connection closes.
    Cut(Vec<u8>, usize),
    /// No Content-Length: the body ends when the connection closes.
    CloseDelimited(Vec<u8>),
    /// Accepts and never answers.
    Silent,
    /// The headers and part of the body, then nothing (the connection stays open).
    Stall(Vec<u8>, usize),
}

fn serve(routes: Vec<(&'static str, Reply)>) -> SocketAddr {
    let routes: Arc<HashMap<&'static str, Reply>> = Arc::new(routes.into_iter().collect());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let routes = Arc::clone(&routes);
            std::thread::spawn(move || answer(stream, &routes));
        }
    });
    addr
}

fn answer(mut stream: TcpStream, routes: &HashMap<&'static str, Reply>) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/");
    let reply = routes.get(path).cloned().unwrap_or(Reply::Full(404, b"not here\n".to_vec()));
    let status_line = |code: u16| match code {
        200 => "200 OK",
        404 => "404 Not Found",
        500 => "500 Internal Server Error",
        _ => "299 Odd",
    };
    let _ = match reply {
        Reply::Full(code, body) => {
            let h = format!(
                "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                status_line(code),
                body.len()
            );
            stream.write_all(h.as_bytes()).and_then(|_| stream.write_all(&body))
        }
        Reply::Cut(body, claimed) => {
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n");
            stream.write_all(h.as_bytes()).and_then(|_| stream.write_all(&body))
        }
        Reply::CloseDelimited(body) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").and_then(|_| stream.write_all(&body))
        }
        Reply::Stall(part, claimed) => {
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(h.as_bytes()).and_then(|_| stream.write_all(&part));
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        Reply::Silent => {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
    };
}

fn source(addr: SocketAddr, path: &str) -> Source {
    // All under one name: each download competes for the same kept copy.
    Source { url: format!("http://{addr}{path}"), format: Format::Rir, country: None, name: Some("apnic".into()) }
}

fn limits() -> Limits {
    Limits { timeout: Duration::from_secs(5), max_bytes: 4096 }
}

fn update_one(dir: &Path, s: Source, limits: &Limits) -> Outcome {
    let mut out = fetch::update(dir, &[s], limits);
    assert_eq!(out.len(), 1);
    out.remove(0).1
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn assert_kept(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("apnic")).unwrap(), GOOD.as_bytes(), "the last good copy is untouched");
    assert!(!dir.join("apnic.part").exists(), "the .part file is removed");
}

#[test]
fn a_good_file_is_stored_and_loaded() {
    let addr = serve(vec![("/good", Reply::Full(200, GOOD.into()))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("geo/cache"); // created on the way
    let s = source(addr, "/good");
    assert_eq!(update_one(&dir, s.clone(), &limits()), Outcome::Updated { bytes: GOOD.len() as u64, records: 3 });
    assert_eq!(std::fs::read(dir.join("apnic")).unwrap(), GOOD.as_bytes());
    assert!(!dir.join("apnic.part").exists());
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(update_one(&dir, s.clone(), &limits()), Outcome::Unchanged);
    assert!(fetch::checked_at(&dir, &s).is_some());

    let (db, warnings) = GeoDb::load_dir(&dir, std::slice::from_ref(&s)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(db.lookup("198.51.100.9".parse().unwrap()), Some(cc("JP")));
    assert_eq!(db.lookup("198.18.2.255".parse().unwrap()), Some(cc("JP")));
    assert_eq!(db.lookup("::ffff:198.18.1.1".parse().unwrap()), Some(cc("JP")));
    assert_eq!(db.lookup("2001:db8:1::1".parse().unwrap()), Some(cc("AU")));
    assert_eq!(db.lookup("203.0.113.1".parse().unwrap()), None, "available space");
    assert_eq!(db.ranges(&[cc("JP")]).0.len(), 2);

    // A kept copy altered behind floodgate's back is an error naming it, not a silently smaller set.
    std::fs::write(dir.join("apnic"), "garbage\n").unwrap();
    let e = GeoDb::load_dir(&dir, &[s]).unwrap_err();
    assert!(e.to_string().contains("apnic:1: field `version`"), "{e}");
}

#[test]
fn every_failure_keeps_the_last_good_copy() {
    let good = GOOD.as_bytes().to_vec();
    let corrupt = GOOD.replace("198.51.100.0|256", "198.51.100.0|25x").into_bytes();
    let short = GOOD.replace("apnic|AU|ipv6|2001:db8::|32|20110101|allocated|A9116F50\n", "").into_bytes();
    let big: Vec<u8> = GOOD.repeat(20).into_bytes();
    let addr = serve(vec![
        ("/good", Reply::Full(200, good.clone())),
        ("/cut", Reply::Cut(good[..good.len() - 40].to_vec(), good.len())),
        ("/cut-at-close", Reply::CloseDelimited(good[..good.len() - 40].to_vec())),
        ("/short", Reply::Full(200, short)),
        ("/no-newline", Reply::Full(200, good[..good.len() - 1].to_vec())),
        ("/corrupt", Reply::Full(200, corrupt)),
        ("/html", Reply::Full(200, b"<html><body>Maintenance</body></html>\n".to_vec())),
        ("/binary", Reply::Full(200, b"2.3|apnic|1|1|1|1|+1000\n\xff\xfe\n".to_vec())),
        ("/500", Reply::Full(500, b"oops\n".to_vec())),
        ("/odd", Reply::Full(299, good.clone())),
        ("/big", Reply::Full(200, big.clone())),
        ("/big-unannounced", Reply::CloseDelimited(big)),
        ("/empty", Reply::Full(200, Vec::new())),
        ("/silent", Reply::Silent),
        ("/stall", Reply::Stall(good[..good.len() / 2].to_vec(), good.len())),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(matches!(update_one(dir, source(addr, "/good"), &limits()), Outcome::Updated { .. }));
    let cases = [
        ("/cut", "ended early"),
        ("/cut-at-close", "truncated"),
        ("/short", "announces 5 records but 4 follow"),
        ("/no-newline", "no newline"),
        ("/corrupt", ":6: field `value`"),
        ("/html", "field `version`"),
        ("/binary", ":2: field `text`: not UTF-8"),
        ("/missing", "HTTP 404"),
        ("/500", "HTTP 500"),
        ("/odd", "HTTP 299"),
        ("/big", "larger than the limit of 4096 bytes"),
        ("/big-unannounced", "larger than the limit of 4096 bytes"),
        ("/empty", "no address ranges"),
    ];
    for (path, why) in cases {
        match update_one(dir, source(addr, path), &limits()) {
            Outcome::Failed { reason } => assert!(reason.contains(why), "{path}: {reason}"),
            other => panic!("{path}: expected a failure, got {other:?}"),
        }
        assert_kept(dir);
    }

    // Silence, and headers with half the body then nothing: the timeout covers the whole body too.
    let quick = Limits { timeout: Duration::from_secs(1), ..limits() };
    for path in ["/silent", "/stall"] {
        let started = Instant::now();
        let outcome = update_one(dir, source(addr, path), &quick);
        assert!(started.elapsed() < Duration::from_secs(5), "{path} took {:?}", started.elapsed());
        assert!(
            matches!(&outcome, Outcome::Failed { reason } if reason.contains("no complete answer within 1s")),
            "{path}: {outcome:?}"
        );
        assert_kept(dir);
    }

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let outcome = update_one(dir, source(closed, "/good"), &limits());
    assert!(matches!(&outcome, Outcome::Failed { reason } if reason.contains("Connection")), "{outcome:?}");
    assert_kept(dir);
}

#[test]
fn one_failing_source_does_not_stop_the_others() {
    let addr = serve(vec![("/good", Reply::Full(200, GOOD.into()))]);
    let tmp = tempfile::tempdir().unwrap();
    let bad = Source { name: Some("first".into()), ..source(addr, "/gone") };
    let good = Source { name: None, ..source(addr, "/good") };
    let out = fetch::update(tmp.path(), &[bad.clone(), good.clone()], &limits());
    assert_eq!(out[0].0, "first");
    assert!(matches!(out[0].1, Outcome::Failed { .. }), "{:?}", out[0]);
    assert_eq!(out[1], ("good".to_string(), Outcome::Updated { bytes: GOOD.len() as u64, records: 3 }));
    let (db, warnings) = GeoDb::load_dir(tmp.path(), &[bad, good]).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no copy of") && warnings[0].contains("/gone"), "{warnings:?}");
    assert_eq!(db.countries(), vec![cc("AU"), cc("JP")]);
}

#[test]
fn gzip_cidr_lists_and_local_files() {
    let zone = "198.51.100.0/25\n198.51.100.128/25\n2001:db8::/48\n";
    let bomb = gzip(&vec![b'#'; 1 << 20]); // 1 MiB of comments, ~1 KiB compressed
    assert!(bomb.len() < 4096);
    let addr =
        serve(vec![("/jp.zone.gz", Reply::Full(200, gzip(zone.as_bytes()))), ("/bomb.gz", Reply::Full(200, bomb))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jp =
        Source { url: format!("http://{addr}/jp.zone.gz"), format: Format::Cidr, country: Some(cc("JP")), name: None };
    assert_eq!(jp.cache_name(), "jp.zone");
    assert_eq!(update_one(dir, jp.clone(), &limits()), Outcome::Updated { bytes: zone.len() as u64, records: 3 });
    assert_eq!(std::fs::read_to_string(dir.join("jp.zone")).unwrap(), zone, "stored decompressed");
    let bomb = Source { url: format!("http://{addr}/bomb.gz"), name: Some("jp.zone".into()), ..jp.clone() };
    let outcome = update_one(dir, bomb, &limits());
    assert!(matches!(&outcome, Outcome::Failed { reason } if reason.contains("larger than")), "{outcome:?}");
    assert_eq!(std::fs::read_to_string(dir.join("jp.zone")).unwrap(), zone);

    // A local copy through file://, e.g. for an offline install.
    let local = tmp.path().join("local-apnic");
    std::fs::write(&local, GOOD).unwrap();
    let file = Source { url: format!("file://{}", local.display()), format: Format::Rir, country: None, name: None };
    file.validate().unwrap();
    let out = fetch::update(&dir.join("cache"), &[file.clone(), jp], &limits());
    assert_eq!(out[0], ("local-apnic".to_string(), Outcome::Updated { bytes: GOOD.len() as u64, records: 3 }));
    let (db, _) = GeoDb::load_dir(&dir.join("cache"), &[file]).unwrap();
    assert_eq!(db.lookup("198.51.100.1".parse().unwrap()), Some(cc("JP")));
}

#[test]
fn a_generated_combined_file_parses() {
    let text = geo_gen::rir_file(10_000, 7);
    assert_eq!(text, geo_gen::rir_file(10_000, 7), "deterministic");
    let lines = text.lines().count();
    assert!((9_900..=10_100).contains(&lines), "{lines} lines");
    let p = parse_rir(&text, "generated").unwrap();
    let ranges: usize = p.v4.values().map(Vec::len).sum::<usize>() + p.v6.values().map(Vec::len).sum::<usize>();
    assert!(p.records > 7_000, "{} address records", p.records);
    assert!(ranges < p.records * 4 / 5, "merging matters: {} records -> {ranges} ranges", p.records);
    assert!(p.v4.len() > 100, "{} countries", p.v4.len());
    let mut db = GeoDb::new();
    db.add(p);
    assert!(!db.ranges(&[cc("JP")]).0.is_empty());
}
