/*
 * Interrupts for the igb test and the tick mode: an IDT and KVM's in-kernel local APIC (xAPIC
 * at 0xfee00000). The VMM installs no IDT, so until interrupts_init() any
 * exception is a triple fault; the default flow never calls it and keeps that
 * behaviour (the `fault` and `ud` cases rely on it).
 *
 * Vectors IRQ_VECTOR (MSI-X), MSI_VECTOR (MSI), INTX_VECTOR (an IOAPIC
 * pin) and TIMER_VECTOR (the LAPIC timer) each count their deliveries and
 * return. Every other vector, an
 * exception included, prints "unexpected vector N" and ends the VM with 23;
 * after interrupts_tolerate() (the chaos mode), NMIs and every vector from 32
 * up are counted and return instead.
 */
#include "guest.h"
#include "io.h"

#define EXIT_UNEXPECTED_VECTOR 23

#define LAPIC_BASE 0xfee00000ul
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_SPURIOUS_VECTOR 0xff
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_MASKED 0x10000
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_TIMER_PERIODIC 0x20000
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_DIVIDE 0x3e0
#define LAPIC_TIMER_DIVIDE_16 0x3

#define IOAPIC_BASE 0xfec00000ul
#define IOAPIC_REGSEL 0x00
#define IOAPIC_WIN 0x10
#define IOAPIC_REDTBL(pin) (0x10 + 2 * (pin)) /* low dword; high dword at +1 */
#define IOAPIC_LEVEL (1u << 15)
#define IOAPIC_MASKED (1u << 16)

#define GATE_INTERRUPT 0x8e /* present, DPL 0, 64-bit interrupt gate */
#define STUB_SIZE 16

struct gate {
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t ist;
	uint8_t type;
	uint16_t offset_mid;
	uint32_t offset_hi;
	uint32_t reserved;
} __attribute__((packed));

struct interrupt_frame; /* pushed by the CPU; the handler does not look */

static struct gate idt[256] __attribute__((aligned(16)));
static volatile uint64_t irq_hits, msi_hits, intx_hits, timer_hits;
static void (*intx_ack)(void);

/*
 * One 16-byte stub per vector: push the vector number, jump to a common path
 * that calls unexpected_vector() on a 16-byte aligned stack. Whether the CPU
 * pushed an error code does not matter: that path never returns.
 */
__asm__(".pushsection .text\n"
	".balign 16\n"
	"isr_stubs:\n"
	".set isr_vector, 0\n"
	".rept 256\n"
	".balign 16\n"
	"pushq $isr_vector\n"
	"jmp isr_unexpected\n"
	".set isr_vector, isr_vector + 1\n"
	".endr\n"
	"isr_unexpected:\n"
	"mov (%rsp), %rdi\n"
	"and $-16, %rsp\n"
	"call unexpected_vector\n"
	".popsection\n");

extern const char isr_stubs[];

__attribute__((used, noreturn)) void unexpected_vector(uint64_t vector)
{
	line_begin();
	put_str("unexpected vector ");
	put_dec(vector);
	line_end();
	finish(EXIT_UNEXPECTED_VECTOR);
}

static void lapic_write(unsigned reg, uint32_t v)
{
	mmio_write32(LAPIC_BASE + reg, v);
}

/* GCC's interrupt attribute saves what it uses and returns with iretq. */
__attribute__((interrupt)) static void irq_handler(struct interrupt_frame *frame)
{
	(void)frame;
	irq_hits++;
	lapic_write(LAPIC_EOI, 0);
}

__attribute__((interrupt)) static void msi_handler(struct interrupt_frame *frame)
{
	(void)frame;
	msi_hits++;
	lapic_write(LAPIC_EOI, 0);
}

/*
 * A level-triggered line stays asserted until the device is quieted: ack()
 * first, then the EOI, which KVM forwards to the IOAPIC (and to VFIO's
 * resample eventfd, which unmasks the host line).
 */
__attribute__((interrupt)) static void intx_handler(struct interrupt_frame *frame)
{
	(void)frame;
	intx_hits++;
	if (intx_ack)
		intx_ack();
	lapic_write(LAPIC_EOI, 0);
}

__attribute__((interrupt)) static void timer_handler(struct interrupt_frame *frame)
{
	(void)frame;
	timer_hits++;
	lapic_write(LAPIC_EOI, 0);
}

void lapic_timer_periodic(uint32_t count)
{
	lapic_write(LAPIC_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_16);
	lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR | LAPIC_LVT_TIMER_PERIODIC);
	lapic_write(LAPIC_TIMER_INITIAL, count);
}

uint64_t timer_count(void)
{
	return timer_hits;
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
	mmio_write32(IOAPIC_BASE + IOAPIC_WIN, v);
}

void ioapic_route_intx(unsigned pin, void (*ack)(void))
{
	intx_ack = ack;
	ioapic_write(IOAPIC_REDTBL(pin) + 1, 0); /* destination: APIC ID 0 */
	ioapic_write(IOAPIC_REDTBL(pin), INTX_VECTOR | IOAPIC_LEVEL); /* fixed, physical, unmasked */
}

void ioapic_mask(unsigned pin)
{
	ioapic_write(IOAPIC_REDTBL(pin), INTX_VECTOR | IOAPIC_LEVEL | IOAPIC_MASKED);
}

uint64_t intx_count(void)
{
	return intx_hits;
}

static void set_gate(unsigned vector, uint64_t handler, uint16_t cs)
{
	idt[vector] = (struct gate){
		.offset_lo = (uint16_t)handler,
		.selector = cs,
		.type = GATE_INTERRUPT,
		.offset_mid = (uint16_t)(handler >> 16),
		.offset_hi = (uint32_t)(handler >> 32),
	};
}

void interrupts_init(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)idt };
	uint16_t cs;

	/* The VMM's GDT: use whatever code selector we are running on. */
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	for (unsigned v = 0; v < 256; v++)
		set_gate(v, (uint64_t)isr_stubs + v * STUB_SIZE, cs);
	set_gate(IRQ_VECTOR, (uint64_t)irq_handler, cs);
	set_gate(MSI_VECTOR, (uint64_t)msi_handler, cs);
	set_gate(INTX_VECTOR, (uint64_t)intx_handler, cs);
	set_gate(TIMER_VECTOR, (uint64_t)timer_handler, cs);
	__asm__ volatile("lidt %0" : : "m"(idtr) : "memory");

	/*
	 * KVM resets the BSP's LINT0 to ExtINT, unmasked (the 8259 path) and
	 * LINT1 is the NMI pin: mask both, only MSIs and the IOAPIC are wanted here.
	 */
	lapic_write(LAPIC_LVT_LINT0, LAPIC_LVT_MASKED);
	lapic_write(LAPIC_LVT_LINT1, LAPIC_LVT_MASKED);
	lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
}

static volatile uint64_t tolerated_hits;

/* NMIs and interrupts of any vector from 32 up: counted, and the LAPIC told. */
__attribute__((interrupt)) static void tolerant_handler(struct interrupt_frame *frame)
{
	(void)frame;
	tolerated_hits++;
	lapic_write(LAPIC_EOI, 0);
}

void interrupts_tolerate(void)
{
	uint16_t cs;

	interrupts_init();
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	set_gate(2, (uint64_t)tolerant_handler, cs);
	for (unsigned v = 32; v < 256; v++)
		set_gate(v, (uint64_t)tolerant_handler, cs);
}

uint64_t tolerated_count(void)
{
	return tolerated_hits;
}

uint64_t irq_count(void)
{
	return irq_hits;
}

uint64_t msi_count(void)
{
	return msi_hits;
}
