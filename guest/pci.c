/*
 * PCI scan through configuration mechanism #1 (0xcf8 address, 0xcfc data).
 * Bus 0 only and read-only apart from the address register: the point is to
 * exercise the VMM's config-space path, not to enumerate a real topology.
 * With no host bridge every read is all ones and the scan finds nothing.
 */
#include "guest.h"
#include "io.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

static uint32_t cfg_read(unsigned dev, unsigned fn, unsigned reg)
{
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | dev << 11 | fn << 8 | (reg & 0xfc));
	return inl(PCI_CONFIG_DATA);
}

/* Header type 0 (endpoint) has six BARs, type 1 (PCI bridge) two. */
static int bar_count(uint8_t header_type)
{
	switch (header_type & 0x7f) {
	case 0:
		return 6;
	case 1:
		return 2;
	default:
		return 0;
	}
}

static void print_function(unsigned dev, unsigned fn, uint32_t id, uint8_t header_type)
{
	uint32_t class = cfg_read(dev, fn, 0x08);

	line_begin();
	put_str("pci 00:");
	put_hex(dev, 2);
	put_char('.');
	put_hex(fn, 1);
	put_char(' ');
	put_hex(id & 0xffff, 4);
	put_char(':');
	put_hex(id >> 16, 4);
	put_str(" class ");
	put_hex(class >> 24, 2);
	put_char(':');
	put_hex(class >> 16, 2);
	put_char(':');
	put_hex(class >> 8, 2);
	line_end();

	for (int i = 0; i < bar_count(header_type); i++) {
		uint32_t bar = cfg_read(dev, fn, 0x10 + 4 * i);

		if (!bar)
			continue;
		line_begin();
		put_str("  bar");
		put_dec(i);
		put_str(" 0x");
		put_hex(bar, 8);
		line_end();
	}
}

void pci_scan(void)
{
	unsigned found = 0;

	for (unsigned dev = 0; dev < 32; dev++) {
		for (unsigned fn = 0; fn < 8; fn++) {
			uint32_t id = cfg_read(dev, fn, 0x00);
			uint8_t header_type;

			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break; /* no function 0: no device */
				continue;
			}
			header_type = (uint8_t)(cfg_read(dev, fn, 0x0c) >> 16);
			print_function(dev, fn, id, header_type);
			found++;
			/* Functions 1..7 exist only on multifunction devices. */
			if (fn == 0 && !(header_type & 0x80))
				break;
		}
	}
	line_begin();
	put_str("pci: ");
	put_dec(found);
	put_str(" device(s)");
	line_end();
}
