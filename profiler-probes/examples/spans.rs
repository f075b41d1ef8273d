//! A tiny instrumented program: one span by hand, then (with the default `tracing` feature)
//! a parent and a child span through the layer. The tests disassemble it and probe it.

fn main() {
    let meta = profiler_probes::span_meta!("manual");
    let id = profiler_probes::next_span_id();
    profiler_probes::begin(id, 0, meta);
    profiler_probes::enter(id);
    profiler_probes::exit(id);
    profiler_probes::end(id);

    #[cfg(feature = "tracing")]
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(profiler_probes::layer())
            .init();
        tracing::info_span!("outer").in_scope(|| tracing::info_span!("inner").in_scope(|| {}));
    }
}
