/*
 * The tick mode (main.c): vCPU 0 prints "tick N ms=T gap=G" about every
 * 100 ms of guest time: the count, the time since the first line and the
 * time since the last. Guest time is the TSC, calibrated once against PIT
 * channel 2 as Linux's pit_calibrate_tsc does (KVM's in-kernel PIT serves
 * port 0x61 with KVM_PIT_SPEAKER_DUMMY). Between lines the vCPU halts and
 * the LAPIC timer wakes it, so the VM costs little host CPU, and a pause
 * (or a live update) shows as a longer gap.
 */
#include "guest.h"
#include "io.h"

#define PIT_CH2 0x42
#define PIT_MODE 0x43
#define PIT_CH2_MODE0 0xb0 /* channel 2, low then high byte, mode 0, binary */
#define PORT_B 0x61
#define PORT_B_GATE2 0x01
#define PORT_B_SPEAKER 0x02
#define PORT_B_OUT2 0x20
#define PIT_HZ 1193182u
#define CALIBRATE_MS 50u
#define TICK_MS 100u
/* 10 ms at KVM's default APIC bus of 1 GHz, divided by 16; only how often the vCPU wakes to look. */
#define TIMER_COUNT 625000u

static uint64_t tsc_per_ms(void)
{
	uint32_t latch = PIT_HZ * CALIBRATE_MS / 1000;
	uint64_t t0;

	outb(PORT_B, (uint8_t)((inb(PORT_B) & ~PORT_B_SPEAKER) | PORT_B_GATE2));
	outb(PIT_MODE, PIT_CH2_MODE0);
	outb(PIT_CH2, (uint8_t)latch);
	outb(PIT_CH2, (uint8_t)(latch >> 8));
	t0 = rdtsc();
	/* Mode 0: OUT2 goes high at the terminal count. */
	while (!(inb(PORT_B) & PORT_B_OUT2))
		cpu_relax();
	return (rdtsc() - t0) / CALIBRATE_MS;
}

void tick_loop(uint64_t ticks)
{
	uint64_t per_ms = tsc_per_ms();
	uint64_t start, last, now;

	if (!per_ms)
		per_ms = 1;
	interrupts_init();
	lapic_timer_periodic(TIMER_COUNT);
	line_begin();
	put_str("tick 0 tsc-khz=");
	put_dec(per_ms);
	line_end();
	start = last = rdtsc();
	for (uint64_t n = 1;;) {
		/* sti's one-instruction shadow: the wake-up cannot slip in before the hlt. */
		__asm__ volatile("sti; hlt; cli" : : : "memory");
		now = rdtsc();
		if (now - last < TICK_MS * per_ms)
			continue;
		line_begin();
		put_str("tick ");
		put_dec(n);
		put_str(" ms=");
		put_dec((now - start) / per_ms);
		put_str(" gap=");
		put_dec((now - last) / per_ms);
		line_end();
		last = now;
		if (ticks && n == ticks)
			finish(0);
		n++;
	}
}
