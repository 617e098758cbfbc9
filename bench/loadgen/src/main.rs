//! ferry-bench-load: a small HTTP/1.1 load generator for ferry's `bench/` harness.
//!
//! N threads, each with one keep-alive connection, send GET (or HEAD) requests for the given
//! URLs (taken round-robin from one shared counter, so with 1,000 URLs every one is asked in
//! turn) and read each body with large reads (1 MiB by default: curl's 16 KiB reads were the
//! bottleneck when measuring blob throughput on this kind of machine). All connections are
//! opened first and released together.
//!
//! Two modes:
//! * `-d SECS`: every connection loops until the deadline; bytes are counted as they arrive, so
//!   a 1 GiB download cut by the deadline still counts what it received. Requests/s counts the
//!   responses that completed inside the window.
//! * `-n N`: exactly N requests in total, then stop; the elapsed time runs until the last one.
//!
//! Prints one JSON object on stdout. std only, so it builds offline in seconds.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: ferry-bench-load [-c CONNS] (-d SECS | -n REQUESTS) [-H 'Name: value']... \
[--head] [--buf BYTES] [--timeout SECS] [--urls-file FILE] URL...";

struct Opts {
    urls: Vec<String>,
    conns: usize,
    duration: Option<Duration>,
    requests: Option<u64>,
    headers: Vec<String>,
    head: bool,
    buf: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        urls: Vec::new(),
        conns: 1,
        duration: None,
        requests: None,
        headers: Vec::new(),
        head: false,
        buf: 1 << 20,
        timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-c" | "--connections" => o.conns = val(&a)?.parse().map_err(|e| format!("-c: {e}"))?,
            "-d" | "--duration" => {
                let s: f64 = val(&a)?.parse().map_err(|e| format!("-d: {e}"))?;
                o.duration = Some(Duration::from_secs_f64(s));
            }
            "-n" | "--requests" => o.requests = Some(val(&a)?.parse().map_err(|e| format!("-n: {e}"))?),
            "-H" | "--header" => o.headers.push(val(&a)?),
            "--head" => o.head = true,
            "--buf" => o.buf = val(&a)?.parse().map_err(|e| format!("--buf: {e}"))?,
            "--timeout" => {
                let s: f64 = val(&a)?.parse().map_err(|e| format!("--timeout: {e}"))?;
                o.timeout = Duration::from_secs_f64(s);
            }
            "--urls-file" => {
                let path = val(&a)?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                o.urls.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => o.urls.push(a),
        }
    }
    if o.urls.is_empty() {
        return Err("no URL".into());
    }
    if o.duration.is_some() == o.requests.is_some() {
        return Err("give exactly one of -d and -n".into());
    }
    if o.conns == 0 || o.buf < 4096 {
        return Err("-c must be >= 1 and --buf >= 4096".into());
    }
    Ok(o)
}

/// host:port and request target of an http:// URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    Ok((hostport, path.to_string()))
}

#[derive(Default)]
struct Stats {
    requests: u64,
    errors: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    status: Vec<(u16, u64)>,
    error_samples: Vec<String>,
}

impl Stats {
    fn status(&mut self, code: u16) {
        match self.status.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.status.push((code, 1)),
        }
    }
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(e);
        }
    }
}

/// One connection with a read buffer; `buf[pos..end]` holds bytes read but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

enum Outcome {
    Done(u16),
    /// The deadline passed while the body was still arriving.
    Cut,
}

struct Ctx<'a> {
    deadline: Option<Instant>,
    bytes: &'a mut u64,
}

impl Ctx<'_> {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl Conn {
    fn open(addr: &str, buf: usize, timeout: Duration) -> std::io::Result<Conn> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
        let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Conn { stream, buf: vec![0; buf], pos: 0, end: 0 })
    }

    /// Reads more bytes into the buffer (compacting it first); Err on EOF.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            return Err(std::io::Error::other("response head larger than the read buffer"));
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.end += n;
        Ok(())
    }

    /// Consumes exactly `len` body bytes (or until EOF when `len` is None), counting them.
    fn body(&mut self, len: Option<u64>, ctx: &mut Ctx) -> std::io::Result<bool> {
        let mut remaining = len.unwrap_or(u64::MAX);
        let have = ((self.end - self.pos) as u64).min(remaining) as usize;
        self.pos += have;
        remaining -= have as u64;
        *ctx.bytes += have as u64;
        while remaining > 0 {
            if ctx.past_deadline() {
                return Ok(false);
            }
            let want = (self.buf.len() as u64).min(remaining) as usize;
            let n = self.stream.read(&mut self.buf[..want])?;
            if n == 0 {
                if len.is_none() {
                    return Ok(true);
                }
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body cut short"));
            }
            remaining -= n as u64;
            *ctx.bytes += n as u64;
        }
        Ok(true)
    }

    /// A CRLF-terminated line from the buffer (for chunked encoding).
    fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..self.end].windows(2).position(|w| w == b"\r\n") {
                let s = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(s);
            }
            self.fill()?;
        }
    }

    fn chunked(&mut self, ctx: &mut Ctx) -> std::io::Result<bool> {
        loop {
            let line = self.line()?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(true);
            }
            if !self.body(Some(size), ctx)? {
                return Ok(false);
            }
            self.line()?;
        }
    }

    /// Sends one request and reads the whole response.
    fn exchange(&mut self, req: &[u8], head: bool, ctx: &mut Ctx) -> std::io::Result<(Outcome, bool)> {
        self.stream.write_all(req)?;
        // Response head.
        let head_end = loop {
            if let Some(i) = self.buf[self.pos..self.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break self.pos + i + 4;
            }
            self.fill()?;
        };
        let text = String::from_utf8_lossy(&self.buf[self.pos..head_end]).into_owned();
        self.pos = head_end;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let code: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut len = None;
        let mut chunked = false;
        let mut close = status_line.starts_with("HTTP/1.0");
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse::<u64>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let complete = if head || code == 204 || code == 304 || (100..200).contains(&code) {
            true
        } else if chunked {
            self.chunked(ctx)?
        } else {
            if len.is_none() {
                close = true;
            }
            self.body(len, ctx)?
        };
        Ok((if complete { Outcome::Done(code) } else { Outcome::Cut }, close))
    }
}

struct Shared {
    urls: Vec<(String, Vec<u8>)>,
    next: AtomicU64,
    total: Option<u64>,
    duration: Option<Duration>,
    start: OnceLock<Instant>,
    ready: Barrier,
    buf: usize,
    timeout: Duration,
    head: bool,
}

fn worker(sh: Arc<Shared>) -> Stats {
    let mut st = Stats::default();
    let addr = sh.urls[0].0.clone();
    let mut conn = match Conn::open(&addr, sh.buf, sh.timeout) {
        Ok(c) => Some(c),
        Err(e) => {
            st.error(format!("connect {addr}: {e}"));
            None
        }
    };
    sh.ready.wait(); // every connection is open
    sh.ready.wait(); // main thread has set the start time
    let start = *sh.start.get().expect("start set");
    let deadline = sh.duration.map(|d| start + d);
    let mut bytes = 0u64;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if sh.total.is_some_and(|t| i >= t) {
            break;
        }
        let (_, req) = &sh.urls[(i % sh.urls.len() as u64) as usize];
        let mut reused = true;
        if conn.is_none() {
            reused = false;
            match Conn::open(&addr, sh.buf, sh.timeout) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    st.error(format!("connect {addr}: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let t0 = Instant::now();
        let before = bytes;
        let mut ctx = Ctx { deadline, bytes: &mut bytes };
        let mut result = conn.as_mut().expect("connected").exchange(req, sh.head, &mut ctx);
        // A kept-alive connection the server closed while idle (nothing received yet): retry
        // once on a fresh connection.
        if result.is_err() {
            if reused && *ctx.bytes == before {
                if let Ok(mut c) = Conn::open(&addr, sh.buf, sh.timeout) {
                    result = c.exchange(req, sh.head, &mut ctx);
                    conn = Some(c);
                }
            }
        }
        match result {
            Ok((Outcome::Done(_), _)) if deadline.is_some_and(|d| Instant::now() > d) => {
                // Completed only after the window closed: not counted as a request.
                break;
            }
            Ok((Outcome::Done(code), close)) => {
                st.requests += 1;
                st.status(code);
                st.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if close {
                    conn = None;
                }
            }
            Ok((Outcome::Cut, _)) => break,
            Err(e) => {
                conn = None;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                st.error(e.to_string());
            }
        }
    }
    st.bytes = bytes;
    st
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let f: Vec<&str> = after.split(' ').collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferry-bench-load: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut urls = Vec::new();
    for u in &o.urls {
        let (hostport, path) = match split_url(u) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("ferry-bench-load: {e}");
                std::process::exit(2);
            }
        };
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferry-bench-load/0.1\r\n",
            if o.head { "HEAD" } else { "GET" },
            path,
            hostport
        );
        for h in &o.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        urls.push((hostport, req.into_bytes()));
    }
    if urls.iter().any(|(h, _)| *h != urls[0].0) {
        eprintln!("ferry-bench-load: all URLs must name the same host:port");
        std::process::exit(2);
    }
    let sh = Arc::new(Shared {
        urls,
        next: AtomicU64::new(0),
        total: o.requests,
        duration: o.duration,
        start: OnceLock::new(),
        ready: Barrier::new(o.conns + 1),
        buf: o.buf,
        timeout: o.timeout,
        head: o.head,
    });
    let cpu0 = cpu_seconds();
    let handles: Vec<_> = (0..o.conns)
        .map(|_| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || worker(sh))
                .expect("spawn")
        })
        .collect();
    sh.ready.wait();
    let start = Instant::now();
    sh.start.set(start).expect("set once");
    sh.ready.wait();
    let mut all = Stats::default();
    for h in handles {
        let s = h.join().expect("worker panicked");
        all.requests += s.requests;
        all.errors += s.errors;
        all.bytes += s.bytes;
        all.latencies_us.extend(s.latencies_us);
        for (c, n) in s.status {
            match all.status.iter_mut().find(|(k, _)| *k == c) {
                Some((_, m)) => *m += n,
                None => all.status.push((c, n)),
            }
        }
        for e in s.error_samples {
            if all.error_samples.len() < 5 {
                all.error_samples.push(e);
            }
        }
    }
    let elapsed = match o.duration {
        Some(d) => d.as_secs_f64(),
        None => start.elapsed().as_secs_f64(),
    };
    let cpu = cpu_seconds() - cpu0;
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (all.latencies_us.len() - 1) as f64).round() as usize;
        all.latencies_us[i] as f64 / 1000.0
    };
    let mean = if all.latencies_us.is_empty() {
        0.0
    } else {
        all.latencies_us.iter().map(|&v| v as f64).sum::<f64>() / all.latencies_us.len() as f64 / 1000.0
    };
    let mut status = String::new();
    all.status.sort();
    for (i, (c, n)) in all.status.iter().enumerate() {
        let _ = write!(status, "{}\"{}\":{}", if i > 0 { "," } else { "" }, c, n);
    }
    let errs: Vec<String> = all.error_samples.iter().map(|e| json_str(e)).collect();
    println!(
        "{{\"connections\":{},\"mode\":\"{}\",\"elapsed_s\":{:.6},\"requests\":{},\"errors\":{},\"bytes\":{},\
\"bytes_per_s\":{:.1},\"mib_per_s\":{:.3},\"rps\":{:.3},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\
\"max\":{:.3},\"mean\":{:.3}}},\"status\":{{{}}},\"client_cpu_s\":{:.2},\"read_buf\":{},\"error_samples\":[{}]}}",
        o.conns,
        if o.duration.is_some() { "duration" } else { "requests" },
        elapsed,
        all.requests,
        all.errors,
        all.bytes,
        all.bytes as f64 / elapsed,
        all.bytes as f64 / elapsed / 1048576.0,
        all.requests as f64 / elapsed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0),
        mean,
        status,
        cpu,
        o.buf,
        errs.join(",")
    );
}
