/* Spins with its stack pointer 512 bytes below a page boundary, whatever the stack's random
 * placement: a 512-byte stack copy then ends on a page boundary without reaching the top of
 * the stack, which a profiler must not take for the top (one run in 256 does this by chance).
 * Usage: pagealigned [seconds]  (default 30). Prints "ready <pid>" once running. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* spin_below_page(n): moves rsp down by 4 to 8 KiB, to 512 bytes below a page boundary, spins
 * n iterations there, and returns. Its CFI (the frame pointer) leads back to the caller, so an
 * unwinder needs the return address 4 KiB and more above the copy's start: past a 512-byte
 * copy. */
void spin_below_page(unsigned long n);
__asm__(".text\n"
        ".globl spin_below_page\n"
        ".type spin_below_page, @function\n"
        "spin_below_page:\n"
        ".cfi_startproc\n"
        "  push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "  mov %rsp, %rbp\n"
        ".cfi_def_cfa_register %rbp\n"
        "  mov %rsp, %rax\n"
        "  sub $3584, %rax\n"
        "  and $4095, %rax\n"
        "  add $4096, %rax\n"
        "  sub %rax, %rsp\n"
        /* A page the stack never reached is not present, and a sample cannot fault it in. */
        "  movq $0, (%rsp)\n"
        "1:\n"
        "  dec %rdi\n"
        "  jnz 1b\n"
        "  leave\n"
        ".cfi_def_cfa %rsp, 8\n"
        "  ret\n"
        ".cfi_endproc\n"
        ".size spin_below_page, .-spin_below_page\n");

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 30;
    printf("ready %d\n", getpid());
    fflush(stdout);
    double until = now() + secs;
    while (now() < until)
        spin_below_page(1000000);
    return 0;
}
