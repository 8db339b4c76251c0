/*
 * Polled output on a 16550 UART at COM1. Pinion's LSR always reads THRE|TEMT,
 * but we poll it anyway like a real driver so the guest also works on a VMM
 * (or emulator) whose UART has a finite FIFO.
 */
#include "guest.h"
#include "io.h"

#define COM1 0x3f8
#define UART_LSR (COM1 + 5)
#define LSR_THRE 0x20

/* In .bss: the ELF loader zeroes it before any vCPU runs (see start.S). */
static int serial_lock;

void put_char(char c)
{
	while (!(inb(UART_LSR) & LSR_THRE))
		cpu_relax();
	outb(COM1, (uint8_t)c);
}

void put_str(const char *s)
{
	while (*s)
		put_char(*s++);
}

void put_hex(uint64_t v, int digits)
{
	static const char hex[] = "0123456789abcdef";

	while (digits-- > 0)
		put_char(hex[(v >> (digits * 4)) & 0xf]);
}

void put_hex_short(uint64_t v)
{
	int digits = 1;

	while (digits < 16 && v >> (digits * 4))
		digits++;
	put_str("0x");
	put_hex(v, digits);
}

void put_dec(uint64_t v)
{
	char buf[21];
	int i = sizeof(buf);

	buf[--i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put_str(&buf[i]);
}

void line_begin(void)
{
	while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&serial_lock, __ATOMIC_RELAXED))
			cpu_relax();
	put_str("pinion-guest: ");
}

void line_end(void)
{
	put_char('\n');
	__atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE);
}

void say(const char *s)
{
	line_begin();
	put_str(s);
	line_end();
}
