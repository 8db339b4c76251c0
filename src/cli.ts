#!/usr/bin/env node
// pinion: the command line. Subcommands parse their own flags; every failure
// ends in one line on stderr and a non-zero exit.
// Each subcommand's modules load only when it runs: under the rig's emulation a
// module graph costs seconds, and `run` is what starts a VM.

const USAGE = `usage: pinion <command> [options]
  rig [--kernel type1|compat] [--uid N] [--memlock KiB] [--timeout S] [--rw DIR]
      [--stall S] [--idle S] -- <command...>
        boot the test rig (QEMU TCG, nested KVM, emulated Intel IOMMU, igb NICs)
        and run <command> inside it with this checkout at the same path;
        exits 125 with a report when L1 stalls (no heartbeat for --stall S, default 20;
        idle with a silent command for --idle S, off by default)
  run --payload FILE [--cmdline S] | --kernel bzImage [--initrd FILE] [--append S] [--decompress kernel|vmm]
      [--memory 64M] [--cpus N] [--memory-backend memfd|anon|hugetlb] [--console FILE] [--api-socket PATH]
        boot FILE (an ELF64 payload, e.g. dist/guest/pinion-guest.elf) or a Linux kernel
        in a KVM VM, guest console on stdout (and stdin, for Linux); exits with the guest's
        exit status (Linux: 0 on reboot, 1 on a kernel panic); --api-socket serves the
        control API (HTTP on a Unix socket, mode 0600) while it runs
  ctl PATH <verb> [args] [--json]
        drive a running VM's control API: info, memory, dma, devices, pause, resume, stop,
        add-ram GPA SIZE [BACKEND], remove-ram GPA, resize-ram GPA SIZE, split-ram GPA AT,
        move-ram GPA TO, replace-ram GPA BACKEND, ping, update [--to COMMAND] (hand the
        VM to a new Pinion process, by default this build; reports the pause and each step)
  open --user UID [--device BDF]... [--memlock BYTES] -- <pinion run ...>
        as root: open /dev/kvm, /dev/iommu (per-process accounting) and the device
        cdevs, then run the VMM as UID with those fds and no privileges
  memlock plan --vm RAM[:DEVICES[:separate]]... [--json] | memlock status [--json]
        RLIMIT_MEMLOCK needed per path and mode; live locked/pinned memory
  demo  the main job: boot the rig and show what Pinion can assign there`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'rig':
      return (await import('./cli/rig.js')).rigCommand(rest);
    case 'run':
      return (await import('./cli/run.js')).runCommand(rest);
    case 'ctl':
      return (await import('./cli/ctl.js')).ctlCommand(rest);
    case 'demo':
      return (await import('./cli/demo.js')).demoCommand(rest);
    case 'open':
      return (await import('./cli/open.js')).openCommand(rest);
    case 'memlock':
      return (await import('./cli/memlock.js')).memlockCommand(rest);
    case undefined:
    case '-h':
    case '--help':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      console.error(`pinion: unknown command '${cmd}'; run pinion --help for the list`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const err = e as { message?: string; exitCode?: number; name?: string };
    console.error(`pinion: ${err.message ?? String(e)}`);
    process.exit(err.exitCode ?? 1);
  },
);
