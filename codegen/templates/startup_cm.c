/* startup_cm.c: minimal Cortex-M start-up for `qsim codegen` firmware.
 *
 * Reset (qk_reset_handler) prepares RAM the way real hardware needs it:
 *   1. copies the initial values of .data from their load address in flash
 *      (__data_load__) to their run address in RAM (__data_start__ .. __data_end__);
 *   2. zeroes .bss (__bss_start__ .. __bss_end__);
 * then jumps to newlib's semihosting start-up (_start from rdimon's crt0),
 * which sets up the C library (it zeroes .bss again, harmlessly) and calls
 * main().  All symbols come from cortex_m.ld.  Any fault ends the program
 * through semihosting with status 99 so a run under QEMU never hangs.  The
 * initial stack pointer is __stack_top from cortex_m.ld. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __stack_top;
extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern void _start(void);

void qk_reset_handler(void);

/* Word copies through volatile pointers: no library call and no initialized
 * data are needed before .data and .bss are ready (the linker script aligns
 * all four boundaries to 4 bytes). */
static void qk_copy_data(void)
{
    const volatile uint32_t *src = &__data_load__;
    volatile uint32_t *dst = &__data_start__;
    while (dst < &__data_end__) {
        *dst++ = *src++;
    }
}

static void qk_zero_bss(void)
{
    volatile uint32_t *dst = &__bss_start__;
    while (dst < &__bss_end__) {
        *dst++ = 0u;
    }
}

void qk_reset_handler(void)
{
    qk_copy_data(); /* .data: flash (load address) -> RAM (run address) */
    qk_zero_bss();
    _start(); /* newlib rdimon crt0: C library set-up, main(), exit() */
    for (;;) {
    }
}

static void qk_fault_handler(void)
{
    _Exit(99);
}

struct qk_vector_table {
    uint32_t *initial_sp;
    void (*handlers[15])(void);
};

__attribute__((section(".vectors"), used))
const struct qk_vector_table qk_vectors = {
    &__stack_top,
    {
        qk_reset_handler, /* Reset */
        qk_fault_handler, /* NMI */
        qk_fault_handler, /* HardFault */
        qk_fault_handler, /* MemManage */
        qk_fault_handler, /* BusFault */
        qk_fault_handler, /* UsageFault */
        0, 0, 0, 0,       /* reserved */
        qk_fault_handler, /* SVCall */
        qk_fault_handler, /* DebugMonitor */
        0,                /* reserved */
        qk_fault_handler, /* PendSV */
        qk_fault_handler  /* SysTick */
    }
};
