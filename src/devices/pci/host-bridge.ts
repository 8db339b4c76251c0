// The host bridge at 00:00.0, so a guest scanning bus 0 finds a root like
// on any PC (cloud-hypervisor's choice of ID: Intel 0x0d57).
import { ConfigSpace } from './config-space.js';
import {
  PCI_CLASS_REVISION,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_DEVICE_ID,
  PCI_HEADER_TYPE,
  PCI_VENDOR_ID,
} from '../../sys/pci-regs.js';

export function hostBridge(): ConfigSpace {
  const c = new ConfigSpace('host bridge');
  c.set(PCI_VENDOR_ID, 2, 0x8086);
  c.set(PCI_DEVICE_ID, 2, 0x0d57);
  c.set(PCI_COMMAND, 2, 0, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  c.set(PCI_CLASS_REVISION, 4, 0x06000000); // class 06 (bridge), subclass 00 (host)
  c.set(PCI_HEADER_TYPE, 1, 0);
  return c;
}
