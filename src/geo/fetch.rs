//! Downloading the country range files and keeping the last good copy of each.
//!
//! A download goes to `DIR/NAME.part`, is parsed and checked whole (see [`super::parse`]), and only then
//! replaces `DIR/NAME` by an atomic rename. Anything short of a complete, valid, non-empty file leaves the
//! last good copy as it was: a failed or cut-off download must never shrink a country set.
//!
//! URLs are `https://`, `http://`, or `file:///absolute/path` (a local copy: offline installs and tests;
//! no percent-decoding). A URL whose path ends in `.gz` is gunzipped and stored decompressed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::parse::{parse_cidr_list, parse_rir, Parsed};
use super::{Country, GeoError};

/// One downloadable file of country ranges, as the config lists it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// The country of every line of a `cidr` list; not used (and refused) for `rir`.
    pub country: Option<Country>,
    /// The file name of the copy kept in the data directory; by default the URL's last path segment.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RIR delegated statistics, `delegated-<rir>-extended-latest` (plain `delegated-<rir>-latest` works too).
    #[default]
    Rir,
    /// One prefix or address per line, all of one country (ipdeny.com zone files and the like).
    Cidr,
}

/// Bounds on one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the whole download: connecting, the request and the entire body.
    pub timeout: Duration,
    /// The most bytes received, and for a `.gz` URL also the most bytes after decompression.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new copy replaced the last one: its size as stored (decompressed) and the address records used.
    Updated { bytes: u64, records: usize },
    /// The download was byte for byte the copy already kept.
    Unchanged,
    /// Nothing was replaced; the last good copy (if any) is kept.
    Failed { reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Updated { bytes, records } => write!(f, "updated: {bytes} bytes, {records} address records"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::Failed { reason } => write!(f, "failed, the last good copy is kept: {reason}"),
        }
    }
}

const SCHEMES: [&str; 3] = ["https://", "http://", "file://"];

impl Source {
    /// The file name of this source's copy in the data directory: `name`, else the URL's last path segment
    /// without `.gz` (the copy is stored decompressed), with anything but `A-Za-z0-9._-` made `_`.
    pub fn cache_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let path = url_path(&self.url);
        let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
        let last = last.strip_suffix(".gz").unwrap_or(last);
        let mut name: String =
            last.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        // Never a hidden file, `.` or `..`.
        if name.starts_with('.') {
            name.insert(0, '_');
        }
        if name.is_empty() {
            name.push_str("source");
        }
        name
    }

    /// Checks what the config may get wrong; the message names the source by its URL.
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.url;
        let Some(scheme) = SCHEMES.iter().find(|s| starts_with_ignore_case(url, s)) else {
            return Err(format!("geo source `{url}`: the URL must start with https://, http:// or file://"));
        };
        let rest = &url[scheme.len()..];
        if *scheme == "file://" {
            if !rest.starts_with('/') {
                return Err(format!("geo source `{url}`: a file URL needs an absolute path (file:///var/lib/...)"));
            }
        } else if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
            return Err(format!("geo source `{url}`: the URL has no host"));
        }
        match (self.format, self.country) {
            (Format::Cidr, None) => {
                return Err(format!(
                    "geo source `{url}`: format = \"cidr\" needs the list's country (country = \"JP\")"
                ))
            }
            (Format::Rir, Some(c)) => {
                return Err(format!(
                    "geo source `{url}`: country = \"{c}\" is only for format = \"cidr\"; an RIR file names the \
                     country of every record"
                ))
            }
            _ => {}
        }
        if let Some(name) = &self.name {
            let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if name.is_empty() || !plain || name.starts_with('.') || name.len() > 200 {
                return Err(format!(
                    "geo source `{url}`: name = \"{name}\" must be a plain file name (A-Z a-z 0-9 . _ -, not \
                     starting with a dot)"
                ));
            }
        }
        if self.cache_name().ends_with(".part") {
            return Err(format!("geo source `{url}`: the copy's name may not end in .part (used for downloads)"));
        }
        Ok(())
    }

    /// Parses a copy of this source's file; `origin` names it in errors.
    pub fn parse(&self, text: &str, origin: &str) -> Result<Parsed, GeoError> {
        match (self.format, self.country) {
            (Format::Rir, _) => parse_rir(text, origin),
            (Format::Cidr, Some(country)) => parse_cidr_list(text, origin, country),
            (Format::Cidr, None) => Err(GeoError::Source {
                origin: origin.to_string(),
                reason: "a cidr list needs its country in the source's config".to_string(),
            }),
        }
    }
}

/// Validates every source and that no two of them would keep their copy under the same name. Errors name the
/// source as the config does (`geo.sources[i]`).
pub fn validate_all(sources: &[Source]) -> Result<(), crate::setting::Invalid> {
    let mut seen = std::collections::BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        let key = format!("geo.sources[{i}]");
        s.validate().map_err(|e| crate::setting::Invalid::new(&key, e))?;
        if let Some(other) = seen.insert(s.cache_name(), &s.url) {
            return Err(crate::setting::Invalid::new(
                key,
                format!(
                    "geo sources `{other}` and `{}` would both be kept as `{}`; give one a `name`",
                    s.url,
                    s.cache_name()
                ),
            ));
        }
    }
    Ok(())
}

/// When the kept copy was last confirmed good (downloaded, or found unchanged), if there is one.
pub fn checked_at(dir: &Path, source: &Source) -> Option<SystemTime> {
    fs::metadata(dir.join(source.cache_name())).and_then(|m| m.modified()).ok()
}

/// Downloads every source into `dir` (created 0755 if missing), replacing a kept copy only with a complete
/// valid one. One source failing does not stop the others. Blocking: run it off the async runtime.
pub fn update(dir: &Path, sources: &[Source], limits: &Limits) -> Vec<(String, Outcome)> {
    let ready = create_dir(dir).map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()));
    let agent = ureq::AgentBuilder::new()
        .timeout(limits.timeout)
        .user_agent(concat!("floodgate/", env!("CARGO_PKG_VERSION")))
        .build();
    sources
        .iter()
        .map(|source| {
            let name = source.cache_name();
            let outcome = match &ready {
                Err(reason) => Outcome::Failed { reason: reason.clone() },
                Ok(()) => update_one(&agent, dir, source, &name, limits),
            };
            (name, outcome)
        })
        .collect()
}

/// Creates `dir` (and its parents) if missing, `dir` itself 0755 whatever the umask: the copies are public
/// data, and the CLI reads them as well as the daemon.
fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

fn update_one(agent: &ureq::Agent, dir: &Path, source: &Source, name: &str, limits: &Limits) -> Outcome {
    if let Err(reason) = source.validate() {
        return Outcome::Failed { reason };
    }
    let part = dir.join(format!("{name}.part"));
    match download_and_replace(agent, source, &part, &dir.join(name), limits) {
        Ok(outcome) => outcome,
        Err(e) => {
            // A stale .part is harmless (the next download truncates it) but would only confuse.
            let _ = fs::remove_file(&part);
            Outcome::Failed { reason: e.to_string() }
        }
    }
}

fn download_and_replace(
    agent: &ureq::Agent,
    source: &Source,
    part: &Path,
    kept: &Path,
    limits: &Limits,
) -> Result<Outcome, GeoError> {
    let url = &source.url;
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source: io::Error| GeoError::Io { path, source }
    };
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(part).map_err(io_err(part))?;
    // Also kept in memory, to compare and parse without reading the file back.
    let bytes = download(agent, url, &mut file, limits)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        GeoError::Parse { origin: url.clone(), line, field: "text", reason: "not UTF-8 text".to_string() }
    })?;
    // Parsed even when unchanged: the kept copy must still be valid for this source's format and this
    // floodgate's parser, or "unchanged" would hide a copy that the database can no longer load.
    let parsed = source.parse(&text, url)?;
    if fs::read(kept).is_ok_and(|old| old == text.as_bytes()) {
        fs::remove_file(part).map_err(io_err(part))?;
        // The modification time says when the copy was last confirmed, for whoever schedules updates.
        let _ = File::options().write(true).open(kept).and_then(|f| f.set_modified(SystemTime::now()));
        return Ok(Outcome::Unchanged);
    }
    // Durable before it becomes the kept copy, so a crash cannot leave an empty or partial file under `kept`.
    file.sync_all().map_err(io_err(part))?;
    drop(file);
    fs::rename(part, kept).map_err(io_err(kept))?;
    // The rename itself durable; a failure here loses nothing that the next update would not redo.
    if let Some(dir) = kept.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(Outcome::Updated { bytes: text.len() as u64, records: parsed.records })
}

/// The body, written to `file` and also returned: decompressed if the URL ends in `.gz`, within the limits.
fn download(agent: &ureq::Agent, url: &str, file: &mut File, limits: &Limits) -> Result<Vec<u8>, GeoError> {
    let fail = |reason: String| GeoError::Fetch { url: url.to_string(), reason };
    let too_large = || GeoError::TooLarge { url: url.to_string(), limit: limits.max_bytes };
    let deadline = Instant::now() + limits.timeout;
    let body: Box<dyn Read> = if starts_with_ignore_case(url, "file://") {
        let path = &url["file://".len()..];
        Box::new(File::open(path).map_err(|source| GeoError::Io { path: path.to_string(), source })?)
    } else {
        let response = match agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => return Err(fail(format!("HTTP {code} {}", r.status_text()))),
            Err(ureq::Error::Transport(t)) => return Err(fail(transport_reason(&t, limits.timeout))),
        };
        if response.status() != 200 {
            return Err(fail(format!("HTTP {} {}, not 200 OK", response.status(), response.status_text())));
        }
        let announced = response.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > limits.max_bytes) {
            return Err(too_large());
        }
        response.into_reader()
    };
    let mut received = Capped { inner: body, left: limits.max_bytes, over: false, deadline };
    let mut decoded: Box<dyn Read + '_> = if url_path(url).ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(&mut received)))
    } else {
        Box::new(&mut received)
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let copied: io::Result<()> = loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        if out.len() as u64 + n as u64 > limits.max_bytes {
            return Err(too_large());
        }
        out.extend_from_slice(&buf[..n]);
        if let Err(e) = file.write_all(&buf[..n]) {
            return Err(GeoError::Fetch { url: url.to_string(), reason: format!("cannot write the download: {e}") });
        }
    };
    drop(decoded);
    match copied {
        Ok(()) => Ok(out),
        Err(_) if received.over => Err(too_large()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            Err(fail(format!("no complete answer within {:?}", limits.timeout)))
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(fail(format!("the download ended early ({e}); a truncated file is never used")))
        }
        Err(e) => Err(fail(format!("download failed: {e}"))),
    }
}

/// The raw bytes received, cut off at the size limit and at the deadline.
struct Capped<R> {
    inner: R,
    left: u64,
    over: bool,
    deadline: Instant,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // ureq bounds each socket read by the deadline; this also bounds a file:// read and a slow trickle.
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // One byte past the limit tells "exactly at the limit" from "over it".
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.over = true;
            return Err(io::Error::other("over the size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn transport_reason(t: &ureq::Transport, timeout: Duration) -> String {
    let mut cause = std::error::Error::source(t);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                return format!("no complete answer within {timeout:?}");
            }
        }
        cause = e.source();
    }
    // ureq's message and its cause often repeat each other; say each part once.
    let mut reason = t.kind().to_string();
    let parts = t.message().map(str::to_string).into_iter().chain(std::error::Error::source(t).map(|e| e.to_string()));
    for part in parts {
        if !reason.contains(&part) {
            reason.push_str(": ");
            reason.push_str(&part);
        }
    }
    reason
}

/// The URL's path part: after the scheme, without query or fragment.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['?', '#']).next().unwrap_or(rest)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(url: &str) -> Source {
        Source { url: url.to_string(), format: Format::Rir, country: None, name: None }
    }

    #[test]
    fn cache_names_come_from_the_url() {
        let s = src("https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest");
        assert_eq!(s.cache_name(), "delegated-apnic-extended-latest");
        assert_eq!(
            src("https://example.net/stats/delegated-ripencc-extended-latest.gz?x=1").cache_name(),
            "delegated-ripencc-extended-latest"
        );
        assert_eq!(src("https://example.net/zones/jp.zone/").cache_name(), "jp.zone");
        assert_eq!(src("https://example.net/").cache_name(), "example.net");
        assert_eq!(src("https://example.net/a/..").cache_name(), "_..");
        assert_eq!(src("https://example.net/a%20b").cache_name(), "a_20b");
        assert_eq!(src("file:///var/lib/geo/jp.zone").cache_name(), "jp.zone");
        let named = Source { name: Some("apnic".to_string()), ..s };
        assert_eq!(named.cache_name(), "apnic");
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(src("https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest").validate().is_ok());
        assert!(src("HTTP://example.net/x").validate().is_ok());
        assert!(src("file:///srv/geo/x").validate().is_ok());
        assert!(src("ftp://example.net/x").validate().unwrap_err().contains("must start with https://"));
        assert!(src("https:///x").validate().unwrap_err().contains("no host"));
        assert!(src("file://relative/x").validate().unwrap_err().contains("absolute path"));
        let cidr = Source { format: Format::Cidr, ..src("https://example.net/jp.zone") };
        assert!(cidr.validate().unwrap_err().contains("needs the list's country"));
        let jp = Source { country: Some("JP".parse().unwrap()), ..cidr };
        assert!(jp.validate().is_ok());
        let rir_jp = Source { format: Format::Rir, ..jp.clone() };
        assert!(rir_jp.validate().unwrap_err().contains("only for format = \"cidr\""));
        for bad in ["../x", "a/b", ".hidden", "", "x.part", "a b"] {
            let s = Source { name: Some(bad.to_string()), ..jp.clone() };
            assert!(s.validate().is_err(), "{bad:?}");
        }
        let twins = [src("https://a.example/x/latest"), src("https://b.example/y/latest")];
        assert!(validate_all(&twins).unwrap_err().to_string().contains("would both be kept as `latest`"));
    }

    #[test]
    fn sources_deserialise_from_the_config() {
        let s: Source =
            toml::from_str("url = \"https://example.net/jp.zone\"\nformat = \"cidr\"\ncountry = \"jp\"\n").unwrap();
        assert_eq!(s.format, Format::Cidr);
        assert_eq!(s.country, Some("JP".parse().unwrap()));
        let r: Source = toml::from_str("url = \"https://example.net/delegated\"\n").unwrap();
        assert_eq!(r.format, Format::Rir);
        assert!(toml::from_str::<Source>("url = \"x\"\nformta = \"cidr\"\n").is_err(), "unknown fields refused");
        assert!(toml::from_str::<Source>("url = \"x\"\nformat = \"csv\"\n").is_err());
    }
}
