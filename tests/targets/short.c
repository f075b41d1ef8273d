/* A short-lived process: spins in spin() for the milliseconds given (default 10) of its own
 * CPU time, then exits. Many of them, started one after the other, are what a build or a
 * test harness looks like to the profiler. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Tests build two versions of one program under another function name. */
#ifndef SPIN
#define SPIN spin
#endif

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) void SPIN(double seconds) {
    double end = cpu_now() + seconds;
    unsigned long x = sink;
    while (cpu_now() < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

static unsigned long long boot_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* With SHORT_TIMES=FILE, appends "pid enter exit cpu_enter cpu_exit": main's entry and exit
 * on CLOCK_BOOTTIME (the profiler's sample clock) and on the process's CPU clock, in ns.
 * Tests tell the samples taken while main ran from those of the exec, the loader and the
 * exit, which no stack can reach main from. */
int main(int argc, char **argv) {
    unsigned long long enter = boot_ns();
    double cpu_before = cpu_now();
    double ms = argc > 1 ? atof(argv[1]) : 10;
    SPIN(ms / 1000.0);
    const char *times = getenv("SHORT_TIMES");
    if (times) {
        char line[128];
        int n = snprintf(line, sizeof line, "%d %llu %llu %.0f %.0f\n", (int)getpid(), enter,
                         boot_ns(), cpu_before * 1e9, cpu_now() * 1e9);
        int fd = open(times, O_WRONLY | O_APPEND | O_CREAT, 0644);
        /* One write to an O_APPEND file: lines of concurrent children never interleave. */
        if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
        close(fd);
    }
    return 0;
}
