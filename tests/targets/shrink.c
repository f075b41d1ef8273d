/* A program whose stacks pass through a library the test shrinks on disk while it runs.
 * Usage: shrink LIBRARY [seconds]. Loads LIBRARY, prints "ready <pid>", waits for a line on
 * stdin, then spins under LIBRARY's lib_call (main -> lib_call -> spin), so the first stacks
 * through the library come after that line. spin never returns into the library and the
 * program ends with _exit: it runs only the library's code pages, which the test keeps, never
 * the pages cut off. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;
static time_t end;

__attribute__((noinline)) static void burn(void) {
    for (unsigned long i = 0; i < 1000000; i++) sink += i;
}

__attribute__((noinline)) static void spin(void) {
    while (time(NULL) < end) burn();
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shrink LIBRARY [seconds]\n");
        return 2;
    }
    int seconds = argc > 2 ? atoi(argv[2]) : 30;
    void *lib = dlopen(argv[1], RTLD_NOW);
    void (*call)(void (*)(void)) = lib ? (void (*)(void (*)(void)))dlsym(lib, "lib_call") : NULL;
    if (!call) {
        fprintf(stderr, "shrink: %s\n", dlerror());
        return 1;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    end = time(NULL) + seconds;
    call(spin);
    return 0;
}
