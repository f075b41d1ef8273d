/* Replaces itself with the program its arguments name, so one process changes image: from
 * this one, built with frame pointers, to, say, one built without.
 * Usage: execer PROGRAM [ARGS...]
 *
 * The profiler calls a program a frame-pointer one when most of its own functions set one up;
 * the C runtime's start-up functions here do not, so a few more functions of its own do. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) static void store(unsigned long v) { sink += v; }

/* Not leaves, and without early returns: their frame set-up comes first. */
#define STEP(name, k)                                                                  \
    __attribute__((noinline)) static void name(const char *s) { store(strlen(s) * (k)); }
STEP(step1, 31)
STEP(step2, 37)
STEP(step3, 41)
STEP(step4, 43)
STEP(step5, 47)
STEP(step6, 53)
STEP(step7, 59)
STEP(step8, 61)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: execer PROGRAM [ARGS...]\n");
        return 2;
    }
    step1(argv[1]), step2(argv[1]), step3(argv[1]), step4(argv[1]);
    step5(argv[1]), step6(argv[1]), step7(argv[1]), step8(argv[1]);
    execv(argv[1], argv + 1);
    perror("execv");
    return 1;
}
