/* The library shrink.c loads: a frame between the caller and its callback, so every stack of
 * the callback passes through this file. The statement after the call keeps it a call rather
 * than a jump: the frame stays on the stack. */
void lib_call(void (*f)(void)) {
    f();
    __asm__ volatile("" ::: "memory");
}
