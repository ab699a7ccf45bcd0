//! What a message costs a native server with the memory store, per room member: stored bytes
//! (key + value, all trees and the `notifications` tree alone) and live heap (a counting
//! global allocator), after sending messages into rooms of 2, 50 and 500 members.
//!
//! `cargo bench -p hearth-bench --bench notification_memory` (release). Environment:
//! `HEARTH_BENCH_MESSAGES` (default 2000), `HEARTH_BENCH_MESSAGES_500` (default the same),
//! `HEARTH_BENCH_REPS` (default 3; figures are medians over the repetitions).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use hearth_core::testing::footprint::{BusyRoom, Footprint};
use hearth_core::testing::test_server;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    notifications: f64,
    stored: f64,
    heap: f64,
    ms_per_send: f64,
}

async fn run(members: usize, messages: usize) -> Run {
    let (hs, _world) = test_server(11).await;
    let mut room = BusyRoom::create(&hs, "m", members).await;
    // One message first, so that what the first one sets up once is not counted.
    room.send(1).await;
    let stored_before = Footprint::of(&*hs.store).await.expect("scan");
    let heap_before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    room.send(messages).await;
    let elapsed = started.elapsed();
    let heap_after = LIVE.load(Ordering::Relaxed);
    let added = Footprint::of(&*hs.store)
        .await
        .expect("scan")
        .since(&stored_before);
    let per = (messages * members) as f64;
    Run {
        notifications: added.tree("notifications").bytes as f64 / per,
        stored: added.total().bytes as f64 / per,
        heap: (heap_after - heap_before) as f64 / per,
        ms_per_send: elapsed.as_secs_f64() * 1000.0 / messages as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let messages = env_usize("HEARTH_BENCH_MESSAGES", 2000);
    let messages_500 = env_usize("HEARTH_BENCH_MESSAGES_500", messages);
    let reps = env_usize("HEARTH_BENCH_REPS", 3).max(1);
    println!("bytes per event per member (medians of {reps}); stored = key + value bytes added");
    println!(
        "{:>7} {:>8} {:>14} {:>12} {:>10} {:>12}",
        "members", "messages", "notifications", "all trees", "heap", "ms per send"
    );
    for members in [2usize, 50, 500] {
        let n = if members >= 500 {
            messages_500
        } else {
            messages
        };
        let runs: Vec<Run> = (0..reps).map(|_| rt.block_on(run(members, n))).collect();
        println!(
            "{:>7} {:>8} {:>14.1} {:>12.1} {:>10.1} {:>12.2}",
            members,
            n,
            median(runs.iter().map(|r| r.notifications).collect()),
            median(runs.iter().map(|r| r.stored).collect()),
            median(runs.iter().map(|r| r.heap).collect()),
            median(runs.iter().map(|r| r.ms_per_send).collect()),
        );
    }
}
