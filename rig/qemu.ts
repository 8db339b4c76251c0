// The L1 machine: q35 under TCG, nested SVM (-cpu EPYC), an emulated Intel
// IOMMU with interrupt remapping, an SR-IOV capable igb behind a PCIe root
// port and a peer igb on the same QEMU-internal hub. No netdev reaches
// anything outside the QEMU process. Two virtio-input functions sit behind a
// PCIe-to-PCI bridge, where the IOMMU cannot tell them apart: one IOMMU group
// with several devices, as on real boards with conventional PCI slots. L1 has
// no virtio-input driver, so only virtio-pci holds them (no hwrng or other
// consumer to disturb when a test unbinds one).

export interface L1Machine {
  kernel: string;
  initramfs: string;
  runDir: string; // holds cmd.sh and the sockets; readable in L1 at the same path
  rwDir?: string; // exported writable at the same path
  memoryMiB: number;
  cpus: number;
  /** false: no IOMMU at all (no DMAR table), as on a host with VT-d off. */
  iommu: boolean;
  /** QEMU's -accel; default PINION_RIG_ACCEL, else tcg (multi-threaded). */
  accel?: string;
  /** More kernel parameters. */
  append?: string[];
  /** The host's TSC rate (rig/host.ts), given to L1 as its early rate. */
  tscKhz?: number;
}

// ctl: boot and exit status; out/err: the command's bytes; hb: L1's heartbeat
// and the host's dump requests (rig/watchdog.ts).
export const PORTS = ['pinion.ctl', 'pinion.out', 'pinion.err', 'pinion.hb'] as const;

export function socketPath(runDir: string, port: string): string {
  return `${runDir}/${port}.sock`;
}

export function qmpPath(runDir: string): string {
  return `${runDir}/qmp.sock`;
}

/** QEMU's log of CPU resets (-d cpu_reset): a triple fault of L1 is named there and nowhere else. */
export function resetLogPath(runDir: string): string {
  return `${runDir}/qemu-reset.log`;
}

export function qemuArgs(m: L1Machine): string[] {
  // highres=off keeps the LAPIC timer periodic (the kernel has no NO_HZ):
  // under TCG, with nested guests stopping, L1 sometimes lost a one-shot
  // LAPIC timer event and then slept for good (every timer-driven task
  // stalled, the CPUs idle). A periodic timer is never reprogrammed, so no
  // event can be lost.
  // Not quiet: the console is a file on the host, the kernel's log of a
  // stalled L1 (hung tasks, lockups, sysrq dumps) is what its report shows.
  const append = [
    'console=ttyS0',
    'highres=off',
    ...(m.iommu ? ['intel_iommu=on', 'iommu=nopt'] : []),
    'panic=-1',
    // L1's own early calibration under TCG is off by up to 0.2% now and then, and KVM keeps that rate
    // for its vCPUs after the kernel refines its own (rig/l1/tsc-rate.ts). The host's rate is exact.
    ...(m.tscKhz ? [`tsc_early_khz=${m.tscKhz}`] : []),
    `pinion.run=${m.runDir}`,
  ];
  // PINION_RIG_APPEND: more kernel parameters for L1, to try things.
  append.push(...(process.env.PINION_RIG_APPEND ?? '').split(' ').filter(Boolean), ...(m.append ?? []));
  if (m.rwDir) append.push(`pinion.rw=${m.rwDir}`);
  const args = [
    // PINION_RIG_ACCEL: e.g. tcg,thread=single, to compare TCG's modes.
    '-M',
    'q35',
    '-accel',
    m.accel ?? process.env.PINION_RIG_ACCEL ?? 'tcg',
    '-cpu',
    'EPYC',
    '-smp',
    String(m.cpus),
    '-m',
    `${m.memoryMiB}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    // QEMU's reset log names a triple fault of L1, which otherwise looks like a reboot L1 asked for.
    '-d',
    'cpu_reset',
    '-D',
    resetLogPath(m.runDir),
    ...(m.iommu ? ['-device', 'intel-iommu,intremap=on'] : []),
    '-kernel',
    m.kernel,
    '-initrd',
    m.initramfs,
    '-append',
    append.join(' '),
    '-chardev',
    `file,id=con,path=${m.runDir}/console.log`,
    '-serial',
    'chardev:con',
    '-qmp',
    `unix:${qmpPath(m.runDir)},server=on,wait=off`,
    '-virtfs',
    'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap',
    '-device',
    'virtio-rng-pci',
    '-device',
    'pcie-root-port,id=rp0,slot=1',
    '-device',
    'igb,bus=rp0,netdev=n0',
    '-netdev',
    'hubport,id=n0,hubid=0',
    '-device',
    'igb,netdev=n1',
    '-netdev',
    'hubport,id=n1,hubid=0',
    '-device',
    'virtio-serial-pci,id=vser',
    '-device',
    'pcie-root-port,id=rp1,slot=2',
    '-device',
    'pcie-pci-bridge,id=pb0,bus=rp1',
    '-device',
    'virtio-keyboard-pci,bus=pb0,addr=1',
    '-device',
    'virtio-mouse-pci,bus=pb0,addr=2',
  ];
  if (m.rwDir) args.push('-virtfs', `local,path=${m.rwDir},mount_tag=rw,security_model=none,multidevs=remap`);
  PORTS.forEach((name, i) => {
    args.push('-chardev', `socket,id=p${i},path=${socketPath(m.runDir, name)},server=on,wait=on`);
    args.push('-device', `virtserialport,bus=vser.0,nr=${i + 1},chardev=p${i},name=${name}`);
  });
  return args;
}
