//! A `tracing` layer that turns every span into a profiler span.

use crate::SpanMeta;
use std::collections::HashMap;
use std::ffi::{CString, c_char};
use std::sync::RwLock;
use tracing::callsite::Identifier;
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The layer: `tracing_subscriber::registry().with(profiler_probes::layer()).init()`.
pub fn layer() -> ProbeLayer {
    ProbeLayer::default()
}

/// Maps `on_new_span` to [`crate::begin`], `on_enter`/`on_exit` to
/// [`crate::enter`]/[`crate::exit`] and `on_close` to [`crate::end`].
#[derive(Default)]
pub struct ProbeLayer {
    /// One leaked [`SpanMeta`] per callsite, made at its first span. Reads vastly outnumber
    /// the writes (bounded by the number of callsites), so a read lock is the hot path and it
    /// neither allocates nor contends with other readers.
    metas: RwLock<HashMap<Identifier, &'static SpanMeta>>,
}

/// Our id of a span, kept in its extensions: `tracing`'s ids are reused after a span closes,
/// the ABI's never are.
struct ProbeId(u64);

impl ProbeLayer {
    fn meta(&self, m: &'static Metadata<'static>) -> &'static SpanMeta {
        let key = m.callsite();
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (inserts are single calls), so keep using it.
        if let Some(meta) = self
            .metas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return meta;
        }
        let mut metas = self.metas.write().unwrap_or_else(|e| e.into_inner());
        // `entry` keeps one SpanMeta per callsite when two threads race to create it.
        metas.entry(key).or_insert_with(|| {
            Box::leak(Box::new(SpanMeta {
                version: SpanMeta::VERSION,
                line: m.line().unwrap_or(0),
                name: leak_c_str(m.name()),
                target: leak_c_str(m.target()),
                file: m.file().map_or(std::ptr::null(), leak_c_str),
            }))
        })
    }
}

/// A NUL-terminated copy that lives for the process; the text stops at an interior NUL
/// (the profiler would stop there anyway).
fn leak_c_str(s: &str) -> *const c_char {
    let bytes = s.split('\0').next().unwrap_or_default();
    CString::new(bytes).map_or(std::ptr::null(), |c| c.into_raw().cast_const())
}

fn probe_id<S>(id: &Id, ctx: &Context<'_, S>) -> Option<u64>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.span(id)?.extensions().get::<ProbeId>().map(|p| p.0)
}

impl<S> Layer<S> for ProbeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // The registry already resolved the parent: the explicit one, else the current span
        // when the span is contextual, else none (root).
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<ProbeId>().map(|p| p.0))
            .unwrap_or(0);
        let ours = crate::next_span_id();
        span.extensions_mut().insert(ProbeId(ours));
        crate::begin(ours, parent, self.meta(attrs.metadata()));
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(ours) = probe_id(id, &ctx) {
            crate::enter(ours);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(ours) = probe_id(id, &ctx) {
            crate::exit(ours);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(ours) = probe_id(&id, &ctx) {
            crate::end(ours);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, Call::*};
    use std::ffi::CStr;
    use tracing_subscriber::prelude::*;

    fn text(p: *const c_char) -> Option<&'static str> {
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap())
    }

    fn begins(calls: &[crate::record::Call]) -> Vec<(u64, u64, &'static SpanMeta)> {
        calls
            .iter()
            .filter_map(|c| match *c {
                Begin(id, parent, meta) => Some((id, parent, meta)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spans_map_to_probe_calls() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            record::take();
            let outer = tracing::info_span!("outer", n = 1);
            let outer_guard = outer.enter();
            let inner = tracing::info_span!("inner"); // contextual: child of outer
            inner.in_scope(|| {});
            let root = tracing::info_span!(parent: None, "root");
            let explicit = tracing::info_span!(parent: &root, "explicit");
            drop((inner, explicit, root));
            drop(outer_guard);
            drop(outer);

            let calls = record::take();
            let b = begins(&calls);
            let [(o, 0, om), (i, ip, im), (r, 0, rm), (e, ep, em)] = b[..] else {
                panic!("unexpected begins: {calls:?}");
            };
            assert_eq!((ip, ep), (o, r));
            assert_eq!(text(om.name), Some("outer"));
            assert_eq!(text(im.name), Some("inner"));
            assert_eq!(text(rm.name), Some("root"));
            assert_eq!(text(em.name), Some("explicit"));
            assert_eq!(text(om.target), Some(module_path!()));
            assert_eq!(text(om.file), Some(file!()));
            assert!(om.line > 0 && om.version == 1);
            assert_eq!(
                calls[1..],
                [
                    Enter(o),
                    Begin(i, o, im),
                    Enter(i),
                    Exit(i),
                    Begin(r, 0, rm),
                    Begin(e, r, em),
                    End(i),
                    End(e),
                    End(r),
                    Exit(o),
                    End(o),
                ]
            );
        });
    }

    #[test]
    fn ids_are_never_reused_and_metadata_is_made_once_per_callsite() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            record::take();
            // tracing reuses the slot (and so the id) of a closed span; we must not.
            for _ in 0..3 {
                tracing::info_span!("again").in_scope(|| {});
            }
            let b = begins(&record::take());
            assert_eq!(b.len(), 3);
            assert!(b[0].0 < b[1].0 && b[1].0 < b[2].0);
            assert!(b.iter().all(|&(_, _, m)| std::ptr::eq(m, b[0].2)));
        });
    }

    #[test]
    fn odd_names_do_not_panic() {
        assert_eq!(text(leak_c_str("a\0b")), Some("a"));
        assert_eq!(text(leak_c_str("")), Some(""));
    }
}
