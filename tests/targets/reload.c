/* A plugin reloaded: runs hot_in_a of LIB_A, unloads LIB_A, loads LIB_B (which the kernel
 * places in the hole LIB_A left, at its very addresses) and runs hot_in_b.
 * Usage: reload LIB_A LIB_B [seconds per library]. Prints "same" when LIB_B was loaded at
 * LIB_A's address with hot_in_b where LIB_A has pad(), what the test is about; "moved" when
 * it came elsewhere, "apart" when the compiler laid the functions out otherwise. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
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
    /* Where pad() lies in LIB_A, from its base. */
    const ElfW(Sym) *pad = NULL;
    void *pad_at = dlsym(a, "pad");
    uintptr_t pad_from = 0, pad_to = 0;
    if (pad_at && dladdr1(pad_at, &info, (void **)&pad, RTLD_DL_SYMENT) && pad) {
        pad_from = (uintptr_t)pad_at - was;
        pad_to = pad_from + pad->st_size;
    }
    if (dlclose(a) != 0) {
        fprintf(stderr, "reload: %s\n", dlerror());
        return 1;
    }
    void (*hot_b)(double) = load(argv[2], "hot_in_b", &b);
    hot_b(seconds);
    uintptr_t is = dladdr((void *)hot_b, &info) ? (uintptr_t)info.dli_fbase : 1;
    uintptr_t hot_from = (uintptr_t)hot_b - is;
    if (is != was)
        printf("moved\n");
    else if (hot_from < pad_from || hot_from >= pad_to)
        printf("apart\n");
    else
        printf("same\n");
    return 0;
}
