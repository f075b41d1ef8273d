//! A tokio program instrumented with `profiler_probes::layer()`: TASKS concurrent tasks, each
//! a `task` span with STEPS `step` child spans, yielding between steps so tasks migrate
//! between the worker threads. Waits for a line on stdin, then prints how many spans it made.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncBufReadExt;
use tracing::Instrument;
use tracing_subscriber::prelude::*;

const TASKS: u64 = 200;
const STEPS: u64 = 5;

static STEP_SPANS: AtomicU64 = AtomicU64::new(0);

/// CPU work inside a step: what the samples inside `step` spans should show.
#[inline(never)]
fn crunch(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..1_600_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    }
    black_box(x)
}

async fn task(id: u64) {
    for step in 0..STEPS {
        let span = tracing::info_span!("step", step);
        STEP_SPANS.fetch_add(1, Ordering::Relaxed);
        async {
            black_box(crunch(id * 31 + step));
            // Back to the scheduler: the task may resume on another worker.
            tokio::task::yield_now().await;
        }
        .instrument(span)
        .await;
    }
}

fn main() {
    tracing_subscriber::registry()
        .with(profiler_probes::layer())
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("ready");
        let mut line = String::new();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        if stdin.read_line(&mut line).await.is_err() {
            return;
        }
        let handles: Vec<_> = (0..TASKS)
            .map(|id| tokio::spawn(task(id).instrument(tracing::info_span!("task", id))))
            .collect();
        for h in handles {
            let _ = h.await;
        }
        println!("task {TASKS} step {}", STEP_SPANS.load(Ordering::Relaxed));
    });
}
