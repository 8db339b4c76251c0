/*
 * Intel 82576 (igb) registers and descriptors used by igb.c and igb-queue.c: offsets in BAR0
 * and bits from the 82576 datasheet, section 8. Queue registers are queue 0's.
 */
#ifndef GUEST_IGB_H
#define GUEST_IGB_H

#include <stdint.h>

#define IGB_VENDOR 0x8086
#define IGB_DEVICE_PF 0x10c9
#define IGB_DEVICE_VF 0x10ca

#define CTRL 0x0000
#define CTRL_SLU (1u << 6)
#define CTRL_RST (1u << 26)
#define STATUS 0x0008
#define STATUS_LU (1u << 1)
#define MDIC 0x0020
#define MDIC_PHY_ADDR (1u << 21) /* QEMU's igb answers PHY address 1 only */
#define MDIC_OP_WRITE (1u << 26)
#define MDIC_READY (1u << 28)
#define BMCR_SPEED1000 0x0040 /* PHY register 0 (BMCR) bits */
#define BMCR_FULLDPLX 0x0100
#define BMCR_ANRESTART 0x0200
#define BMCR_ANENABLE 0x1000

#define RCTL 0x0100
#define RCTL_EN (1u << 1)
#define RCTL_UPE (1u << 3)
#define RCTL_MPE (1u << 4)
#define RCTL_LBM_MAC (1u << 6)
#define RCTL_BAM (1u << 15)
#define RCTL_SECRC (1u << 26)
#define TCTL 0x0400
#define TCTL_EN (1u << 1)
#define TCTL_PSP (1u << 3)

/*
 * Interrupts: ICR-style causes (at their 0x00c0 addresses, as Linux's igb and
 * QEMU's model use them), and the extended (per MSI-X vector) ones.
 */
#define ICR 0x00c0 /* read to clear (IMS 0, or not in MSI-X mode) */
#define ICS 0x00c8
#define IMS 0x00d0
#define IMC 0x00d8
#define ICR_LSC (1u << 2) /* link status change */
#define GPIE 0x1514
#define GPIE_MULTIPLE_MSIX (1u << 4)
#define GPIE_EIAME (1u << 30)
#define GPIE_PBA_SUPPORT (1u << 31)
#define EICS 0x1520
#define EIMS 0x1524
#define EIMC 0x1528
#define EIAC 0x152c
#define EICR 0x1580
#define EITR0 0x1680

#define RAL0 0x5400 /* receive address 0: the NIC's MAC from its EEPROM */
#define RAH0 0x5404
#define RAH_AV (1u << 31)

#define RDBAL 0xc000
#define RDBAH 0xc004
#define RDLEN 0xc008
#define SRRCTL 0xc00c
#define SRRCTL_BSIZEPKT_2K 2 /* in 1 KiB units */
#define SRRCTL_DESCTYPE_ADV_ONEBUF (1u << 25)
#define RDH 0xc010
#define RDT 0xc018
#define RXDCTL 0xc028
#define TDBAL 0xe000
#define TDBAH 0xe004
#define TDLEN 0xe008
#define TDH 0xe010
#define TDT 0xe018
#define TXDCTL 0xe028
#define QUEUE_ENABLE (1u << 25) /* RXDCTL, TXDCTL */

/* Advanced TX data descriptor (read format). */
struct tx_desc {
	uint64_t addr;
	uint32_t cmd_type_len; /* length | TXD_* */
	uint32_t olinfo_status; /* PAYLEN << 14 */
};

#define TXD_DTYP_DATA (3u << 20)
#define TXD_EOP (1u << 24)
#define TXD_IFCS (1u << 25)
#define TXD_RS (1u << 27)
#define TXD_DEXT (1u << 29)
#define TXD_PAYLEN_SHIFT 14

/*
 * Advanced RX descriptor. Read format: packet buffer address, then header
 * buffer address (0: one buffer). Write-back overwrites both: the first
 * quadword with RSS/packet info, the second as status_error, length, vlan.
 */
struct rx_desc {
	uint64_t addr;
	uint32_t status_error;
	uint16_t length;
	uint16_t vlan;
};

#define RXD_STAT_DD (1u << 0)
#define RXD_STAT_EOP (1u << 1)

#endif
