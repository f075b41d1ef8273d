/* Kernel lock contention. Four threads map, touch and unmap a small region ROUNDS times each,
 * all in remap(): mmap and munmap take the process's mmap_lock (an rwsem) for writing, the
 * page fault of the touch takes it for reading, so the threads wait for each other in the
 * kernel, not on any lock of their own. Prints "remaps N". Waits for a line on stdin (the
 * profiler is attached) before it starts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define THREADS 4
static int ROUNDS = 20000;

__attribute__((noinline)) void remap(void) {
    char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    p[0] = 1;
    munmap(p, 1 << 16);
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) remap();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) ROUNDS = atoi(argv[1]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    printf("remaps %d\n", THREADS * ROUNDS);
    return 0;
}
