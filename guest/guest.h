/* Shared declarations of the test guest (see main.c for its behaviour). */
#ifndef GUEST_H
#define GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEBUG_EXIT_PORT 0xf4 /* OUT v: the VMM ends the VM with status v & 0xff */
#define POST_PORT 0x80 /* writes ignored by the VMM: the benchmark port */
/* The MMIO benchmark's address: in the PCI hole, claimed by nothing while no device is assigned. */
#define MMIO_BENCH_ADDR 0xd0000000ul

/* serial.c: whole lines under a spinlock so vCPUs never interleave. */
void line_begin(void);
void line_end(void);
void put_char(char c);
void put_str(const char *s);
void put_hex(uint64_t v, int digits);
void put_hex_short(uint64_t v); /* "0x" and no leading zeros */
void put_dec(uint64_t v);
void say(const char *s);

/* main.c: prints "exit N" and ends the VM with status N. */
__attribute__((noreturn)) void finish(uint64_t status);

/* pci.c: bus 0 through configuration mechanism #1. */
struct pci_fn {
	uint8_t dev, fn;
};

void pci_scan(void);
bool pci_find(uint16_t vendor, uint16_t device, struct pci_fn *out);
uint32_t pci_read32(struct pci_fn f, unsigned reg);
uint16_t pci_read16(struct pci_fn f, unsigned reg);
void pci_write16(struct pci_fn f, unsigned reg, uint16_t v);
void pci_write32(struct pci_fn f, unsigned reg, uint32_t v);
uint64_t pci_bar(struct pci_fn f, unsigned i);
unsigned pci_find_cap(struct pci_fn f, uint8_t id);
const char *pci_msix_route(struct pci_fn f, unsigned entry, uint64_t addr, uint32_t data);
const char *pci_msix_disable(struct pci_fn f);
const char *pci_msix_mask(struct pci_fn f, unsigned entry, bool masked);
uint64_t pci_msix_pending(struct pci_fn f); /* PBA bits of vectors 0-63 */
const char *pci_msi_route(struct pci_fn f, uint64_t addr, uint16_t data);
void pci_msi_disable(struct pci_fn f);

/* idt.c: an IDT, the local APIC and the IOAPIC, for the igb test's interrupts. */
#define IRQ_VECTOR 0x40 /* MSI-X: counted by irq_count() */
#define MSI_VECTOR 0x41 /* MSI: counted by msi_count() */
#define INTX_VECTOR 0x42 /* INTx through the IOAPIC: counted by intx_count(); any other vector ends the VM */
#define TIMER_VECTOR 0x43 /* the LAPIC timer: counted by timer_count() */
#define LAPIC_MSI_ADDRESS 0xfee00000u /* MSI to APIC ID 0, physical destination */
void interrupts_init(void);
/* interrupts_init(), then NMIs and vectors 32-255 only counted (the chaos mode's garbage MSIs). */
void interrupts_tolerate(void);
uint64_t tolerated_count(void);
uint64_t irq_count(void);
uint64_t msi_count(void);
/* Routes IOAPIC pin `pin` (level-triggered) to INTX_VECTOR on APIC 0; the
 * handler calls ack() to quiet the device before its EOI. */
void ioapic_route_intx(unsigned pin, void (*ack)(void));
void ioapic_mask(unsigned pin);
uint64_t intx_count(void);
/* Starts the LAPIC timer, periodic, `count` bus cycles divided by 16 apart, on TIMER_VECTOR. */
void lapic_timer_periodic(uint32_t count);
uint64_t timer_count(void);

/* tick.c: the tick mode; never returns (ends the VM after `ticks` ticks, unless 0). */
__attribute__((noreturn)) void tick_loop(uint64_t ticks);

/* igb.c: the 82576 test; 0 when it passed, else the exit status. */
uint64_t igb_test(bool baddma);

/* igbvf.c: the 82576 VF test (when only a VF is present); 0, else 26. */
uint64_t igbvf_test(struct pci_fn f);

/*
 * igb.c, igbvf.c: the first 82576 function (the PF, else a VF) reset, its
 * rings (igb-queue.c) up, RX and TX on, for stream.c; NULL or why not.
 * igb_stream_close() stops its DMA.
 */
const char *igb_stream_open(void);
void igb_stream_close(void);
const char *igb_stream_irq_start(void);
void igb_stream_irq_raise(void);
const char *igbvf_open(struct pci_fn f);
void igbvf_close(void);
const char *igbvf_stream_irq_start(struct pci_fn f);
void igbvf_stream_irq_raise(void);

/* hotplug.c: the memory-hotplug mailbox's events answered; 0, else 28. */
uint64_t hotplug_run(uint64_t events, uint64_t ram_size);

/* chaos.c: the hostile guest from one seed; 0 once it got to the end, 30 with no NIC. */
uint64_t chaos_run(uint64_t seed, uint64_t ram_size);

/* stream.c: frames from the peer until it says stop; 0, else 29 (a frame's bytes were wrong) or 30 (no NIC). */
uint64_t stream_run(uint64_t ram_size, bool heartbeat);

#endif
