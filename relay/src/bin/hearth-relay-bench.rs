//! `hearth-relay-bench`: a native load client for the relay. It starts a fresh relay process
//! (`--relay-bin`) on a free loopback port for each measurement and simulates many servers,
//! each proving its key-derived name as a browser server does.
//!
//! - **throughput**: `--servers` servers each keep `--window` requests in flight to random
//!   others, which answer at once; forwarded requests per second (request in, answer back).
//! - **latency**: `--rate` requests per second in total, paced, from `--latency-senders`
//!   servers to partners through the relay; and at the same time the same load straight to an
//!   echo server in another process (the direct loopback baseline: without a relay, the
//!   destination is another process too). Added latency = relay − direct, at p50/p99.
//! - **memory**: `--idle` idle authenticated connections; the relay's RSS growth per
//!   connection (VmRSS from /proc).
//!
//! Everything is loopback, bounded in time and count; `--reps` repeats each measurement and
//! the summary gives medians. `bench/relay.sh` builds in release mode and runs this.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use futures::{FutureExt, SinkExt, StreamExt};
use hearth_relay_proto::frame::{self, Frame};
use hearth_relay_proto::{Client, Incoming, auth};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Parser)]
#[command(name = "hearth-relay-bench")]
struct Args {
    /// The relay binary to start for each measurement.
    #[arg(long, required_unless_present = "echo_server")]
    relay_bin: Option<PathBuf>,
    /// Run only the echo server of the direct baseline (the bench starts itself this way, so
    /// that the baseline's destination is another process, as it is through the relay).
    #[arg(long, hide = true)]
    echo_server: bool,
    /// Repetitions of each measurement; the summary gives medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Which measurements: throughput, latency, memory (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,memory"
    )]
    only: Vec<String>,
    /// Simulated servers for the throughput run. Each sends its requests and its answers on
    /// one connection, which the relay closes as a flood past `--rate-frames` (2,000 frames/s
    /// by default): on a quiet 2-core machine the relay forwards far more than 100 servers
    /// may send, so 100 made the run fail with disconnected destinations.
    #[arg(long, default_value_t = 400)]
    servers: usize,
    /// Requests each server keeps in flight in the throughput run.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds measured (after `--warmup`) in the throughput and latency runs.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Total paced requests per second in the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Senders in the latency run (each has its own partner).
    #[arg(long, default_value_t = 50)]
    latency_senders: usize,
    /// Idle connections in the memory run.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Bytes of request body (a JSON-ish payload).
    #[arg(long, default_value_t = 256)]
    body: usize,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("cannot start the relay: {0}")]
    Start(String),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("protocol: {0}")]
    Proto(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A relay process for one measurement; killed when dropped.
struct RelayProc {
    child: Child,
    addr: SocketAddr,
    www: PathBuf,
}

impl RelayProc {
    fn start(bin: &Option<PathBuf>, extra: &[&str]) -> Result<Self, BenchError> {
        let bin = bin
            .as_ref()
            .ok_or_else(|| BenchError::Start("--relay-bin is required".into()))?;
        let www = std::env::temp_dir().join(format!("hearth-relay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&www)?;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--www"])
            .arg(&www)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Start(format!("{}: {e}", bin.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Start("no stdout".into()))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("hearth-relay listening on http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Start(format!("unexpected banner {line:?}")))?;
        Ok(Self { child, addr, www })
    }

    /// Resident set size in KiB.
    fn rss_kib(&self) -> Result<u64, BenchError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| BenchError::Start("no VmRSS".into()))
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.www);
    }
}

fn ws_config() -> WebSocketConfig {
    // Small read buffers: thousands of these live in this process too.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(64 * 1024)
}

/// A key per simulated server, distinct across runs so no name is reused by chance.
fn key(run: u64, i: usize) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed[8..16].copy_from_slice(&run.to_le_bytes());
    seed[16] = 0x5e;
    SigningKey::from_bytes(&seed)
}

fn name(k: &SigningKey) -> String {
    auth::name_of_key(&k.verifying_key().to_bytes())
}

async fn next_binary(ws: &mut Ws) -> Result<Vec<u8>, BenchError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(BenchError::Proto(format!("unexpected {other:?}"))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BenchError::Proto("closed".into())),
        }
    }
}

/// Connects and proves the name of `k`, as a browser server would.
async fn connect(addr: SocketAddr, k: &SigningKey) -> Result<Ws, BenchError> {
    let mut client = Client::new(&format!("http://{addr}"), &name(k))
        .map_err(|e| BenchError::Proto(e.to_string()))?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(client.socket_url(), Some(ws_config()), true)
            .await?;
    let bytes = next_binary(&mut ws).await?;
    let Ok(Incoming::Challenge(c)) = client.on_frame(&bytes) else {
        return Err(BenchError::Proto("expected a challenge".into()));
    };
    let hello = client
        .hello(&c, |m| k.sign(m).to_bytes())
        .map_err(|e| BenchError::Proto(e.to_string()))?;
    ws.send(Message::Binary(hello.into())).await?;
    let bytes = next_binary(&mut ws).await?;
    match client.on_frame(&bytes) {
        Ok(Incoming::Welcome { .. }) => Ok(ws),
        _ => Err(BenchError::Proto("expected a welcome".into())),
    }
}

async fn connect_many(
    addr: SocketAddr,
    run: u64,
    n: usize,
    parallel: usize,
) -> Result<Vec<Ws>, BenchError> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + parallel).min(n))
            .map(|j| async move { connect(addr, &key(run, j)).await })
            .collect();
        for ws in futures::future::join_all(batch).await {
            out.push(ws?);
        }
        i += parallel;
    }
    Ok(out)
}

/// A federation-shaped request: a profile query with an X-Matrix header and a JSON body.
fn request_frame(id: u32, dest: &str, body: &[u8]) -> Vec<u8> {
    let auth = b"X-Matrix origin=\"sender\",destination=\"dest\",key=\"ed25519:abcd1234\",sig=\"c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl\"";
    frame::encode_request(
        id,
        dest,
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=%40bench%3Ahearth&field=displayname",
        [
            ("authorization", auth.as_slice()),
            ("content-type", b"application/json".as_slice()),
        ],
        body,
    )
    .unwrap_or_default()
}

fn response_frame(id: u32) -> Vec<u8> {
    frame::encode_response(
        id,
        200,
        [("content-type", b"application/json".as_slice())],
        b"{\"displayname\":\"Bench User\",\"avatar_url\":\"mxc://hearth/abcdefghijklmnop\"}",
    )
    .unwrap_or_default()
}

fn body(len: usize) -> Vec<u8> {
    let mut b = b"{\"pad\":\"".to_vec();
    b.resize(len.saturating_sub(2).max(b.len()), b'x');
    b.extend_from_slice(b"\"}");
    b
}

/// Small deterministic generator for destinations (no need for a crypto RNG here).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Throughput: every server answers requests at once and keeps `window` of its own in flight.
async fn throughput(args: &Args, run: u64) -> Result<f64, BenchError> {
    let relay = RelayProc::start(&args.relay_bin, &[])?;
    let n = args.servers.max(2);
    let sockets = connect_many(relay.addr, run, n, 50).await?;
    let names: Arc<Vec<String>> = Arc::new((0..n).map(|i| name(&key(run, i))).collect());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(body(args.body));
    let mut tasks = Vec::new();
    for (me, mut ws) in sockets.into_iter().enumerate() {
        let (names, done, failed, stop, body, window) = (
            names.clone(),
            done.clone(),
            failed.clone(),
            stop.clone(),
            body.clone(),
            args.window,
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((me as u64 + 1) * 0x1000_0001));
            let mut pick = move || {
                let mut d = (rng.next() % (names.len() as u64 - 1)) as usize;
                if d >= me {
                    d += 1;
                }
                names[d].clone()
            };
            let mut next_id: u32 = 1;
            for _ in 0..window {
                ws.feed(Message::Binary(
                    request_frame(next_id, &pick(), &body).into(),
                ))
                .await?;
                next_id += 1;
            }
            ws.flush().await?;
            let mut outs: Vec<Vec<u8>> = Vec::new();
            loop {
                let Some(first) = ws.next().await else { break };
                let mut handle = |m: Message, outs: &mut Vec<Vec<u8>>| {
                    let Message::Binary(b) = m else { return };
                    match Frame::decode(&b) {
                        Ok(Frame::Request(r)) => outs.push(response_frame(r.id)),
                        Ok(Frame::Response(r)) => {
                            if r.status == 200 {
                                done.fetch_add(1, Relaxed);
                            } else {
                                failed.fetch_add(1, Relaxed);
                            }
                            if !stop.load(Relaxed) {
                                outs.push(request_frame(next_id, &pick(), &body));
                                next_id = next_id.wrapping_add(1).max(1);
                            }
                        }
                        _ => {}
                    }
                };
                handle(first?, &mut outs);
                while let Some(Some(m)) = ws.next().now_or_never() {
                    handle(m?, &mut outs);
                }
                for o in outs.drain(..) {
                    ws.feed(Message::Binary(o.into())).await?;
                }
                ws.flush().await?;
            }
            Ok::<(), BenchError>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let (c0, t0) = (done.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let (c1, t1) = (done.load(Relaxed), Instant::now());
    stop.store(true, Relaxed);
    for t in &tasks {
        t.abort();
    }
    let failed = failed.load(Relaxed);
    if failed > 0 {
        return Err(BenchError::Proto(format!(
            "{failed} requests were not answered 200"
        )));
    }
    // The relay's own count, as a check on the client's.
    let answered = relay_metric(
        relay.addr,
        "hearth_relay_requests_total{outcome=\"answered\"}",
    )
    .await?;
    println!(
        "  client counted {} answers in all, the relay {answered}",
        done.load(Relaxed)
    );
    Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
}

/// The direct baseline's destination: answers every request at once, as the responders behind
/// the relay do. Runs in its own process (`--echo-server`), which prints its address and ends
/// when its standard input closes.
async fn echo_server() -> Result<(), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("echo listening on {}", listener.local_addr()?);
    let serve = async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config())).await
                else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Binary(b) = m
                        && let Ok(Frame::Request(r)) = Frame::decode(&b)
                        && ws
                            .send(Message::Binary(response_frame(r.id).into()))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    };
    let parent_gone = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = serve => {}
        _ = parent_gone => {}
    }
    Ok(())
}

/// This program again, as the echo server; killed when dropped.
struct EchoProc {
    child: Child,
    addr: SocketAddr,
}

impl EchoProc {
    fn start() -> Result<Self, BenchError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--echo-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Start("no stdout".into()))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("echo listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Start(format!("unexpected echo banner {line:?}")))?;
        Ok(Self { child, addr })
    }
}

impl Drop for EchoProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Paced requests from each sender to its partner; returns sorted round-trip times.
async fn paced(
    senders: Vec<Ws>,
    partners: Vec<Option<Ws>>,
    dests: Vec<String>,
    args: &Args,
) -> Result<Vec<Duration>, BenchError> {
    let k = senders.len();
    let interval = Duration::from_secs_f64(k as f64 / f64::from(args.rate.max(1)));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let body = Arc::new(body(args.body));
    let mut tasks = Vec::new();
    for (i, (mut ws, dest)) in senders.into_iter().zip(dests).enumerate() {
        let (samples, body) = (samples.clone(), body.clone());
        // Staggered so the senders together send evenly, not in bursts.
        let first = tokio::time::Instant::now() + interval.mul_f64(i as f64 / k as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent: HashMap<u32, Instant> = HashMap::new();
            let mut next_id = 1u32;
            let mut mine = Vec::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if Instant::now() >= end {
                            break;
                        }
                        sent.insert(next_id, Instant::now());
                        ws.send(Message::Binary(request_frame(next_id, &dest, &body).into())).await?;
                        next_id += 1;
                    }
                    m = ws.next() => {
                        let Some(m) = m else { break };
                        if let Message::Binary(b) = m?
                            && let Ok(Frame::Response(r)) = Frame::decode(&b)
                            && let Some(at) = sent.remove(&r.id)
                            && at >= measure_from
                        {
                            mine.push(at.elapsed());
                        }
                    }
                }
            }
            if let Ok(mut s) = samples.lock() {
                s.extend(mine);
            }
            Ok::<(), BenchError>(())
        }));
    }
    let mut responders = Vec::new();
    for mut ws in partners.into_iter().flatten() {
        responders.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m
                    && let Ok(Frame::Request(r)) = Frame::decode(&b)
                    && ws
                        .send(Message::Binary(response_frame(r.id).into()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => return Err(BenchError::Proto(format!("sender task: {e}"))),
        }
    }
    for r in responders {
        r.abort();
    }
    let mut v = std::mem::take(
        &mut *samples
            .lock()
            .map_err(|_| BenchError::Proto("poisoned".into()))?,
    );
    v.sort_unstable();
    Ok(v)
}

fn pct(v: &[Duration], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1000.0
}

struct Latency {
    relay_p50: f64,
    relay_p99: f64,
    direct_p50: f64,
    direct_p99: f64,
    samples: usize,
}

async fn latency(args: &Args, run: u64) -> Result<Latency, BenchError> {
    let k = args.latency_senders.max(1);
    // Through the relay: sender i → partner k+i, both simulated servers in this process.
    let relay = RelayProc::start(&args.relay_bin, &[])?;
    let mut all = connect_many(relay.addr, run, 2 * k, 50).await?;
    let partners: Vec<Option<Ws>> = all.split_off(k).into_iter().map(Some).collect();
    let dests = (0..k).map(|i| name(&key(run, k + i))).collect();
    // Direct: as many senders straight to an echo server in another process.
    let echo = EchoProc::start()?;
    let mut direct_senders = Vec::with_capacity(k);
    for _ in 0..k {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            format!("ws://{}/", echo.addr),
            Some(ws_config()),
            true,
        )
        .await?;
        direct_senders.push(ws);
    }
    // Both at once, each at the full rate: a stall of this shared machine then falls on both
    // paths alike instead of on whichever happened to be measured at the time.
    let (through, direct) = tokio::join!(
        paced(all, partners, dests, args),
        paced(direct_senders, Vec::new(), vec!["echo".to_owned(); k], args)
    );
    let (through, direct) = (through?, direct?);
    let within = relay_metric(
        relay.addr,
        "hearth_relay_forward_duration_seconds_bucket{le=\"0.002\"}",
    )
    .await?;
    let count = relay_metric(relay.addr, "hearth_relay_forward_duration_seconds_count").await?;
    let over =
        |v: &[Duration], ms: u64| v.iter().filter(|d| **d > Duration::from_millis(ms)).count();
    println!(
        "  round trips over 2 ms: {} of {} through the relay, {} of {} direct; in the relay's own \
         histogram (request in → answer out, the destination's time included): {} of {count}",
        over(&through, 2),
        through.len(),
        over(&direct, 2),
        direct.len(),
        count - within
    );
    drop((relay, echo));
    Ok(Latency {
        relay_p50: pct(&through, 50),
        relay_p99: pct(&through, 99),
        direct_p50: pct(&direct, 50),
        direct_p99: pct(&direct, 99),
        samples: through.len(),
    })
}

/// RSS growth of the relay per idle authenticated connection, in KiB.
async fn memory(args: &Args, run: u64) -> Result<(f64, u64), BenchError> {
    // Long ping and idle limits: the measurement is of idle connections, not of pings.
    let relay = RelayProc::start(
        &args.relay_bin,
        &["--ping-interval", "10m", "--idle-timeout", "20m"],
    )?;
    // One connection first, so one-time allocations (runtime, buffers) are in the baseline.
    let warm = connect(relay.addr, &key(run, usize::MAX / 2)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss_kib()?;
    let conns = connect_many(relay.addr, run, args.idle, 100).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_kib()?;
    drop((warm, conns));
    let per = (after.saturating_sub(before)) as f64 / args.idle as f64;
    Ok((per, after))
}

/// One sample from the relay's `/metrics`.
async fn relay_metric(addr: SocketAddr, sample: &str) -> Result<f64, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .ok_or_else(|| BenchError::Proto(format!("no {sample} in /metrics")))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-relay-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), BenchError> {
    if args.echo_server {
        return echo_server().await;
    }
    let want = |s: &str| args.only.iter().any(|o| o == s);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    let (mut tput, mut lat, mut mem) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let run = base * 100 + rep as u64;
        if want("throughput") {
            let r = throughput(args, run * 3).await?;
            println!(
                "rep {rep}: throughput {r:.0} forwarded requests/s ({} servers, window {})",
                args.servers, args.window
            );
            tput.push(r);
        }
        if want("latency") {
            let l = latency(args, run * 3 + 1).await?;
            println!(
                "rep {rep}: latency at {}/s: relay p50 {:.3} ms p99 {:.3} ms; direct p50 {:.3} ms p99 {:.3} ms; added p50 {:.3} ms p99 {:.3} ms ({} samples)",
                args.rate,
                l.relay_p50,
                l.relay_p99,
                l.direct_p50,
                l.direct_p99,
                l.relay_p50 - l.direct_p50,
                l.relay_p99 - l.direct_p99,
                l.samples
            );
            lat.push(l);
        }
        if want("memory") {
            let (per, rss) = memory(args, run * 3 + 2).await?;
            println!(
                "rep {rep}: memory {per:.1} KiB per idle connection ({} connections, relay RSS {:.1} MiB)",
                args.idle,
                rss as f64 / 1024.0
            );
            mem.push(per);
        }
    }
    println!(
        "\nmedians of {} reps on {} cores:",
        args.reps,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if !tput.is_empty() {
        println!("  forwarded requests/s: {:.0}", median(tput));
    }
    if !lat.is_empty() {
        let m = |f: fn(&Latency) -> f64| median(lat.iter().map(f).collect());
        println!(
            "  latency at {}/s: relay p50 {:.3} ms, p99 {:.3} ms; direct p50 {:.3} ms, p99 {:.3} ms; added p50 {:.3} ms, p99 {:.3} ms",
            args.rate,
            m(|l| l.relay_p50),
            m(|l| l.relay_p99),
            m(|l| l.direct_p50),
            m(|l| l.direct_p99),
            m(|l| l.relay_p50 - l.direct_p50),
            m(|l| l.relay_p99 - l.direct_p99)
        );
    }
    if !mem.is_empty() {
        println!("  memory per idle connection: {:.1} KiB", median(mem));
    }
    Ok(())
}
