/*
 * Intel 82576 VF (igbvf) registers used by igbvf.c: offsets in the VF's BAR0
 * (Linux's drivers/net/ethernet/intel/igbvf/regs.h, mbx.h, vf.h). Queue
 * registers are the VF's queue 0. Descriptors are igb.h's advanced ones.
 */
#ifndef GUEST_IGBVF_H
#define GUEST_IGBVF_H

#define VF_CTRL 0x0000
#define VF_CTRL_RST (1u << 26)
#define VF_STATUS 0x0008

/* Interrupts: the VF's extended causes (3 MSI-X vectors). */
#define VTEICS 0x1520
#define VTEIMS 0x1524
#define VTEIMC 0x1528
#define VTEIAC 0x152c
#define VTEIAM 0x1530
#define VTEICR 0x1580
#define VTEITR0 0x1680
#define VTIVAR0 0x1700
#define VTIVAR_MISC 0x1740

/* Mailbox to the PF: 16 words of shared memory and the control register. */
#define VMBMEM 0x0800
#define VMB_WORDS 16
#define V2PMAILBOX 0x0c40
#define V2PMAILBOX_REQ 0x01 /* request for PF ready */
#define V2PMAILBOX_ACK 0x02 /* VF acknowledges the PF's message */
#define V2PMAILBOX_VFU 0x04 /* VF owns the mailbox buffer */
#define V2PMAILBOX_PFU 0x08 /* PF owns the mailbox buffer */
#define V2PMAILBOX_PFSTS 0x10 /* PF wrote a message */
#define V2PMAILBOX_PFACK 0x20 /* PF acknowledged our message */
#define V2PMAILBOX_RSTI 0x40 /* PF reset in progress */
#define V2PMAILBOX_RSTD 0x80 /* PF reset done */
#define V2PMAILBOX_R2C_BITS 0xb0 /* read to clear: RSTD, PFSTS, PFACK */

#define VF_MSG_RESET 0x01
#define VT_MSGTYPE_ACK 0x80000000u
#define VT_MSGTYPE_NACK 0x40000000u
#define VT_MSGTYPE_CTS 0x20000000u /* PF: clear to send (after a reset) */
#define VF_MSG_SET_MAC_ADDR 0x02

#define VF_RDBAL 0x2800
#define VF_RDBAH 0x2804
#define VF_RDLEN 0x2808
#define VF_SRRCTL 0x280c
#define VF_RDH 0x2810
#define VF_RDT 0x2818
#define VF_RXDCTL 0x2828
#define VF_TDBAL 0x3800
#define VF_TDBAH 0x3804
#define VF_TDLEN 0x3808
#define VF_TDH 0x3810
#define VF_TDT 0x3818
#define VF_TXDCTL 0x3828

#endif
