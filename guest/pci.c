/*
 * PCI through configuration mechanism #1 (0xcf8 address, 0xcfc data), bus 0
 * only. The scan is read-only apart from the address register: it exercises
 * the VMM's config-space path, not a real topology. With no host bridge every
 * read is all ones and the scan finds nothing. The accessors below serve a
 * driver (igb.c): BARs as the VMM assigned them, capabilities, MSI-X, MSI.
 */
#include "guest.h"
#include "io.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CTRL 2 /* from the capability: Message Control */
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FUNCTION_MASK 0x4000
#define MSIX_CTRL_TABLE_SIZE 0x7ff /* N - 1 */
#define MSIX_TABLE 4 /* from the capability: BIR (bits 2:0) and offset */
#define MSIX_PBA 8 /* from the capability: BIR (bits 2:0) and offset */
#define MSIX_ENTRY_SIZE 16 /* address lo, address hi, data, vector control */
#define MSIX_ENTRY_VECTOR_CTRL 12
#define MSIX_ENTRY_MASKED 1
#define PCI_CAP_ID_MSI 0x05
#define MSI_CTRL 2 /* from the capability: Message Control */
#define MSI_CTRL_ENABLE 0x0001
#define MSI_CTRL_MME 0x0070 /* Multiple Message Enable: log2 of the vectors */
#define MSI_CTRL_64BIT 0x0080
#define MSI_ADDRESS 4
#define MSI_ADDRESS_HI 8 /* 64-bit capable only */
#define MSI_DATA_32 8 /* Message Data without, and with, the upper address */
#define MSI_DATA_64 12

static void cfg_address(unsigned dev, unsigned fn, unsigned reg)
{
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | dev << 11 | fn << 8 | (reg & 0xfc));
}

static uint32_t cfg_read(unsigned dev, unsigned fn, unsigned reg)
{
	cfg_address(dev, fn, reg);
	return inl(PCI_CONFIG_DATA);
}

static void cfg_write(unsigned dev, unsigned fn, unsigned reg, uint32_t v)
{
	cfg_address(dev, fn, reg);
	outl(PCI_CONFIG_DATA, v);
}

/*
 * A BAR's size the way firmware finds it: write all ones, read back the
 * bits that stuck, put the address back. Decoding stays off meanwhile
 * (nothing has enabled it yet when the scan runs).
 */
static uint32_t bar_size(unsigned dev, unsigned fn, unsigned reg, uint32_t bar)
{
	uint32_t mask;

	cfg_write(dev, fn, reg, 0xffffffffu);
	mask = cfg_read(dev, fn, reg);
	cfg_write(dev, fn, reg, bar);
	return bar & 1 ? (~(mask & ~3u) + 1) & 0xffff : ~(mask & ~0xfu) + 1;
}

static int hex_digits(uint64_t v)
{
	int n = 1;

	while (v >>= 4)
		n++;
	return n;
}

uint32_t pci_read32(struct pci_fn f, unsigned reg)
{
	return cfg_read(f.dev, f.fn, reg);
}

void pci_write32(struct pci_fn f, unsigned reg, uint32_t v)
{
	cfg_address(f.dev, f.fn, reg);
	outl(PCI_CONFIG_DATA, v);
}

/* 16-bit accesses use the data window's byte lanes (0xcfc + 2), as an OS does. */
uint16_t pci_read16(struct pci_fn f, unsigned reg)
{
	cfg_address(f.dev, f.fn, reg);
	return inw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)));
}

void pci_write16(struct pci_fn f, unsigned reg, uint16_t v)
{
	cfg_address(f.dev, f.fn, reg);
	outw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)), v);
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
		unsigned reg = 0x10 + 4 * i;
		uint32_t bar = cfg_read(dev, fn, reg);
		bool upper = i > 0 && (cfg_read(dev, fn, reg - 4) & 7) == 4; /* high half of a 64-bit BAR */

		if (!bar)
			continue;
		line_begin();
		put_str("  bar");
		put_dec(i);
		put_str(" 0x");
		put_hex(bar, 8);
		if (!upper) {
			uint32_t size = bar_size(dev, fn, reg, bar);

			put_str(" size 0x");
			put_hex(size, hex_digits(size));
		}
		line_end();
	}
}

/* The address of memory BAR i (64-bit aware), or 0 if it is I/O or unassigned. */
uint64_t pci_bar(struct pci_fn f, unsigned i)
{
	uint32_t lo = pci_read32(f, PCI_BAR0 + 4 * i);
	uint64_t addr = lo & ~0xfu;

	if (lo & 1)
		return 0;
	if ((lo >> 1 & 3) == 2) /* type 64: the next BAR holds the high half */
		addr |= (uint64_t)pci_read32(f, PCI_BAR0 + 4 * (i + 1)) << 32;
	return addr;
}

/* Config offset of the first capability with this ID, or 0. */
unsigned pci_find_cap(struct pci_fn f, uint8_t id)
{
	unsigned at;

	if (!(pci_read16(f, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	at = pci_read32(f, PCI_CAP_PTR) & 0xfc;
	/* 48 hops at most: a looping list must not hang the guest. */
	for (int hops = 0; at >= 0x40 && hops < 48; hops++) {
		uint32_t head = pci_read32(f, at);

		if ((head & 0xff) == id)
			return at;
		at = head >> 8 & 0xfc;
	}
	return 0;
}

/*
 * Points MSI-X table entry `entry` at (addr, data), unmasked, then enables
 * MSI-X with the function mask clear: entry first, so the device has nowhere
 * stale to send a message once enabled. The table lives in a BAR (the VMM
 * traps it: the host's vfio-pci owns the real one). NULL, or why not.
 */
/* Guest-physical address of the MSI-X table (reg MSIX_TABLE) or PBA (MSIX_PBA); 0 if none. */
static uint64_t msix_struct(struct pci_fn f, unsigned reg)
{
	unsigned cap = pci_find_cap(f, PCI_CAP_ID_MSIX);
	uint32_t v;
	uint64_t bar;

	if (!cap)
		return 0;
	v = pci_read32(f, cap + reg);
	bar = pci_bar(f, v & 7);
	return bar ? bar + (v & ~7u) : 0;
}

const char *pci_msix_route(struct pci_fn f, unsigned entry, uint64_t addr, uint32_t data)
{
	unsigned cap = pci_find_cap(f, PCI_CAP_ID_MSIX);
	uint16_t ctrl;
	uint64_t table, e;

	if (!cap)
		return "no MSI-X capability";
	ctrl = pci_read16(f, cap + MSIX_CTRL);
	if (entry > (ctrl & MSIX_CTRL_TABLE_SIZE))
		return "MSI-X table too small";
	table = msix_struct(f, MSIX_TABLE);
	if (!table)
		return "MSI-X table BAR not assigned";
	e = table + entry * MSIX_ENTRY_SIZE;
	mmio_write32(e + 0, (uint32_t)addr);
	mmio_write32(e + 4, (uint32_t)(addr >> 32));
	mmio_write32(e + 8, data);
	mmio_write32(e + MSIX_ENTRY_VECTOR_CTRL, 0); /* unmasked */
	ctrl = (uint16_t)((ctrl | MSIX_CTRL_ENABLE) & ~MSIX_CTRL_FUNCTION_MASK);
	pci_write16(f, cap + MSIX_CTRL, ctrl);
	if (!(pci_read16(f, cap + MSIX_CTRL) & MSIX_CTRL_ENABLE))
		return "MSI-X Message Control did not take the enable bit";
	return NULL;
}

const char *pci_msix_mask(struct pci_fn f, unsigned entry, bool masked)
{
	uint64_t table = msix_struct(f, MSIX_TABLE);
	uint64_t ctrl = table + entry * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CTRL;

	if (!table)
		return "no MSI-X table";
	mmio_write32(ctrl, masked ? MSIX_ENTRY_MASKED : 0);
	if ((mmio_read32(ctrl) & MSIX_ENTRY_MASKED) != (masked ? MSIX_ENTRY_MASKED : 0))
		return "the vector control word did not take the mask bit";
	return NULL;
}

uint64_t pci_msix_pending(struct pci_fn f)
{
	uint64_t pba = msix_struct(f, MSIX_PBA);

	return pba ? mmio_read32(pba) | (uint64_t)mmio_read32(pba + 4) << 32 : 0;
}

/* Clears the MSI-X enable bit (the table stays as it is). NULL, or why not. */
const char *pci_msix_disable(struct pci_fn f)
{
	unsigned cap = pci_find_cap(f, PCI_CAP_ID_MSIX);

	if (!cap)
		return "no MSI-X capability";
	pci_write16(f, cap + MSIX_CTRL, (uint16_t)(pci_read16(f, cap + MSIX_CTRL) & ~MSIX_CTRL_ENABLE));
	if (pci_read16(f, cap + MSIX_CTRL) & MSIX_CTRL_ENABLE)
		return "MSI-X enable bit did not clear";
	return NULL;
}

/*
 * Points the MSI capability at (addr, data) and enables it with one vector
 * (Multiple Message Enable 0): address and data first, then the enable bit,
 * all through config space. Reads everything back. NULL, or why not.
 */
const char *pci_msi_route(struct pci_fn f, uint64_t addr, uint16_t data)
{
	unsigned cap = pci_find_cap(f, PCI_CAP_ID_MSI);
	uint16_t ctrl;
	unsigned data_at;
	bool wide;

	if (!cap)
		return "no MSI capability";
	ctrl = pci_read16(f, cap + MSI_CTRL);
	wide = ctrl & MSI_CTRL_64BIT;
	if (!wide && addr >> 32)
		return "MSI capability is 32-bit only, the address is not";
	/* Disabled while the message changes. */
	ctrl = (uint16_t)(ctrl & ~(MSI_CTRL_ENABLE | MSI_CTRL_MME));
	pci_write16(f, cap + MSI_CTRL, ctrl);
	pci_write32(f, cap + MSI_ADDRESS, (uint32_t)addr);
	if (wide)
		pci_write32(f, cap + MSI_ADDRESS_HI, (uint32_t)(addr >> 32));
	data_at = cap + (wide ? MSI_DATA_64 : MSI_DATA_32);
	pci_write16(f, data_at, data);
	if (pci_read32(f, cap + MSI_ADDRESS) != (uint32_t)addr || (wide && pci_read32(f, cap + MSI_ADDRESS_HI) != (uint32_t)(addr >> 32)))
		return "MSI Message Address did not read back";
	if (pci_read16(f, data_at) != data)
		return "MSI Message Data did not read back";
	pci_write16(f, cap + MSI_CTRL, (uint16_t)(ctrl | MSI_CTRL_ENABLE));
	ctrl = pci_read16(f, cap + MSI_CTRL);
	if (!(ctrl & MSI_CTRL_ENABLE))
		return "MSI enable did not stick";
	if (ctrl & MSI_CTRL_MME)
		return "MSI Multiple Message Enable is not 0 (one vector)";
	return NULL;
}

/* Clears the MSI enable bit, if there is an MSI capability. */
void pci_msi_disable(struct pci_fn f)
{
	unsigned cap = pci_find_cap(f, PCI_CAP_ID_MSI);

	if (cap)
		pci_write16(f, cap + MSI_CTRL, (uint16_t)(pci_read16(f, cap + MSI_CTRL) & ~MSI_CTRL_ENABLE));
}

/*
 * Calls visit() on each function of bus 0 until it returns true; returns how
 * many it visited.
 */
typedef bool visit_fn(unsigned dev, unsigned fn, uint32_t id, uint8_t header_type, void *ctx);

static unsigned walk_bus0(visit_fn *visit, void *ctx)
{
	unsigned seen = 0;

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
			seen++;
			if (visit(dev, fn, id, header_type, ctx))
				return seen;
			/* Functions 1..7 exist only on multifunction devices. */
			if (fn == 0 && !(header_type & 0x80))
				break;
		}
	}
	return seen;
}

static bool print_visit(unsigned dev, unsigned fn, uint32_t id, uint8_t header_type, void *ctx)
{
	(void)ctx;
	print_function(dev, fn, id, header_type);
	return false;
}

void pci_scan(void)
{
	unsigned found = walk_bus0(print_visit, NULL);

	line_begin();
	put_str("pci: ");
	put_dec(found);
	put_str(" device(s)");
	line_end();
}

struct find {
	uint32_t id; /* device << 16 | vendor, as config offset 0 reads */
	struct pci_fn *out;
	bool found;
};

static bool find_visit(unsigned dev, unsigned fn, uint32_t id, uint8_t header_type, void *ctx)
{
	struct find *want = ctx;

	(void)header_type;
	if (id != want->id)
		return false;
	*want->out = (struct pci_fn){ (uint8_t)dev, (uint8_t)fn };
	want->found = true;
	return true;
}

bool pci_find(uint16_t vendor, uint16_t device, struct pci_fn *out)
{
	struct find want = { (uint32_t)device << 16 | vendor, out, false };

	walk_bus0(find_visit, &want);
	return want.found;
}
