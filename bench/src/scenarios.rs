//! The three measurements. Users and rooms are set up once; each repetition sends with fresh
//! transaction ids, so every request creates a new event.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{ClientError, Conn, Result, sync_has_message};
use crate::stats::percentile;

/// A user with a room of their own (or shared), on their own connection.
pub struct Sender {
    conn: Conn,
    room: String,
}

impl Sender {
    pub async fn new(addr: SocketAddr, localpart: &str) -> Result<Self> {
        let mut conn = Conn::open(addr).await?;
        conn.register(localpart).await?;
        let room = conn.create_room(&[]).await?;
        Ok(Self { conn, room })
    }

    async fn send_many(&mut self, tag: &str, n: usize) -> Result<()> {
        for i in 0..n {
            self.conn
                .send(&self.room, &format!("{tag}-{i}"), "benchmark message")
                .await?;
        }
        Ok(())
    }
}

/// (a) One user sends `n` messages back to back, after `warmup` unmeasured ones. Events/s.
pub async fn sequential(s: &mut Sender, rep: usize, warmup: usize, n: usize) -> Result<f64> {
    s.send_many(&format!("seq{rep}w"), warmup).await?;
    let start = Instant::now();
    s.send_many(&format!("seq{rep}"), n).await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// (b) Every sender sends `per_user` messages into their own room, all at once. Total events/s
/// over the wall time from the first request to the last answer.
pub async fn concurrent(
    senders: Vec<Sender>,
    rep: usize,
    warmup: usize,
    per_user: usize,
) -> Result<(f64, Vec<Sender>)> {
    let count = senders.len();
    let mut warm = JoinSet::new();
    for mut s in senders {
        warm.spawn_local(async move {
            s.send_many(&format!("conc{rep}w"), warmup)
                .await
                .map(|()| s)
        });
    }
    let senders = collect(warm).await?;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for mut s in senders {
        set.spawn_local(async move {
            s.send_many(&format!("conc{rep}"), per_user)
                .await
                .map(|()| s)
        });
    }
    let senders = collect(set).await?;
    let rate = (count * per_user) as f64 / start.elapsed().as_secs_f64();
    Ok((rate, senders))
}

async fn collect(mut set: JoinSet<Result<Sender>>) -> Result<Vec<Sender>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => out.push(r?),
            Err(e) => {
                return Err(ClientError::Shape {
                    method: http::Method::PUT,
                    path: "send task".into(),
                    body: format!("task failed: {e}"),
                });
            }
        }
    }
    Ok(out)
}

/// Two users in one room; the reader long-polls.
pub struct Pair {
    writer: Conn,
    reader: Option<Conn>,
    room: String,
    since: String,
}

impl Pair {
    pub async fn new(addr: SocketAddr, tag: &str) -> Result<Self> {
        let mut writer = Conn::open(addr).await?;
        let mut reader = Conn::open(addr).await?;
        let reader_id = reader.register(&format!("{tag}reader")).await?;
        writer.register(&format!("{tag}writer")).await?;
        let room = writer.create_room(&[&reader_id]).await?;
        reader.join(&room).await?;
        let since = Conn::next_batch(&reader.sync(None, 0).await?)?;
        Ok(Self {
            writer,
            reader: Some(reader),
            room,
            since,
        })
    }
}

pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// (c) The reader has a `/sync?timeout=30000` waiting; the writer sends; the sample is the time
/// from the start of the send until the reader's sync returns carrying the event.
pub async fn delivery(pair: &mut Pair, rep: usize, samples: usize) -> Result<Latency> {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let body = format!("latency {rep}-{i}");
        let Some(mut reader) = pair.reader.take() else {
            break;
        };
        let since = pair.since.clone();
        let poll = tokio::task::spawn_local(async move {
            let r = reader.sync(Some(&since), 30_000).await;
            (reader, r, Instant::now())
        });
        // Let the request reach the server and park there.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        pair.writer
            .send(&pair.room, &format!("lat{rep}-{i}"), &body)
            .await?;
        let (mut reader, mut r, mut t1) = poll.await.map_err(|e| ClientError::Shape {
            method: http::Method::GET,
            path: "/sync task".into(),
            body: e.to_string(),
        })?;
        // A poll that returned for another reason does not count; follow on until the event.
        loop {
            let v = r?;
            pair.since = Conn::next_batch(&v)?;
            if sync_has_message(&v, &pair.room, &body) {
                break;
            }
            r = reader.sync(Some(&pair.since), 30_000).await;
            t1 = Instant::now();
        }
        pair.reader = Some(reader);
        ms.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
    }
    Ok(Latency {
        p50_ms: percentile(&ms, 50.0).unwrap_or(f64::NAN),
        p99_ms: percentile(&ms, 99.0).unwrap_or(f64::NAN),
    })
}
