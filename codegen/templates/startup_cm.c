/* startup_cm.c: minimal Cortex-M vector table for `qsim codegen` firmware.
 *
 * Reset jumps to newlib's semihosting start-up (_start from rdimon's crt0),
 * which zeroes .bss (__bss_start__ .. __bss_end__), sets up the C library
 * and calls main().  Any fault ends the program through semihosting with
 * status 99 so a run under QEMU never hangs.  The initial stack pointer is
 * __stack_top from cortex_m.ld. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __stack_top;
extern void _start(void);

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
        _start,           /* Reset */
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
