/* A hot loop whose leaf is in glibc: fill() calls memset on a 256 KiB buffer over and over, so
 * most samples land in memset, which glibc builds without frame pointers: a frame-pointer walk
 * from there skips fill(). Usage: libcall [seconds]. Prints "ready <pid>" once running. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[256 << 10];

__attribute__((noinline)) void fill(int round) {
    memset(buf, round & 0xff, sizeof buf);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 30;
    printf("ready %d\n", getpid());
    fflush(stdout);
    time_t end = time(NULL) + seconds;
    for (int round = 0; time(NULL) < end; round++)
        for (int i = 0; i < 1000; i++) fill(round + i);
    return buf[0] == 42;
}
