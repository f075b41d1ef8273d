/* A plugin reloaded: runs hot_in_a of LIB_A, unloads LIB_A, loads LIB_B (which the kernel
 * places in the hole LIB_A left, at its very addresses) and runs hot_in_b.
 * Usage: reload LIB_A LIB_B [seconds per library]. Prints "same" when LIB_B was loaded at
 * LIB_A's address, "moved" otherwise. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void (*load(const char *path, const char *name, void **handle))(double) {
    *handle = dlopen(path, RTLD_NOW);
    void (*f)(double) = *handle ? (void (*)(double))dlsym(*handle, name) : NULL;
    if (!f) {
        fprintf(stderr, "reload: %s\n", dlerror());
        exit(1);
    }
    return f;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: reload LIB_A LIB_B [seconds]\n");
        return 2;
    }
    double seconds = argc > 3 ? atof(argv[3]) : 1.0;
    void *a, *b;
    void (*hot_a)(double) = load(argv[1], "hot_in_a", &a);
    hot_a(seconds);
    Dl_info info;
    uintptr_t was = dladdr((void *)hot_a, &info) ? (uintptr_t)info.dli_fbase : 0;
    if (dlclose(a) != 0) {
        fprintf(stderr, "reload: %s\n", dlerror());
        return 1;
    }
    void (*hot_b)(double) = load(argv[2], "hot_in_b", &b);
    hot_b(seconds);
    uintptr_t is = dladdr((void *)hot_b, &info) ? (uintptr_t)info.dli_fbase : 1;
    printf("%s\n", is == was ? "same" : "moved");
    return 0;
}
