/* A second translation unit: declarations only. */
#include "profiler_probes.h"

uint64_t other_tu_span(uint64_t parent);

uint64_t other_tu_span(uint64_t parent) {
    PROFILER_SPAN_META(meta, "other", "probe-test");
    uint64_t id = profiler_span_start(&meta, parent);
    profiler_span_finish(id);
    return id;
}
