#!/usr/bin/env node
// pinion: the command line. Subcommands parse their own flags; every failure
// ends in one line on stderr and a non-zero exit: 2 for a usage error, 1 for
// a refusal (or the code a failure carries, as the rig's 125).
// Each subcommand's modules load only when it runs: under the rig's emulation a
// module graph costs seconds, and `run` is what starts a VM.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';

// A VMM's own memory sits beside its guest's for as long as the guest runs; V8's speed-for-memory trades
// (more inlining, eager heap growth) buy nothing on a loop that waits in KVM_RUN. Set before any module
// of a subcommand is compiled and before any vCPU thread's heap exists.
setFlagsFromString('--optimize-for-size');

const USAGE = `usage: pinion <command> [options]; pinion <command> --help for its options; pinion --version
  rig [--kernel type1|compat] [--uid N] [--memlock SIZE] [--timeout S] [--rw DIR] [--memory SIZE] [--cpus N]
      [--iommu on|off] [--stall S] [--idle S] -- <command...>
        boot the test rig (QEMU TCG, nested KVM, emulated Intel IOMMU, igb NICs)
        and run <command> inside it with this checkout at the same path;
        exits 125 with a report when L1 stalls (no heartbeat for --stall S, default 20;
        idle with a silent command for --idle S, off by default)
  run --payload FILE [--cmdline S] | --kernel bzImage [--initrd FILE] [--append S] [--decompress kernel|vmm]
      [--memory SIZE] [--cpus N] [--memory-backend memfd|anon|hugetlb] [--console FILE]
      [--device BDF]... [--iommu auto|legacy|iommufd] [--api-socket PATH]
        boot FILE (an ELF64 payload, e.g. dist/guest/pinion-guest.elf) or a Linux kernel
        in a KVM VM, guest console on stdout (and stdin, for Linux); exits with the guest's
        exit status (Linux: 0 on reboot, 1 on a kernel panic); --api-socket serves the
        control API (HTTP on a Unix socket, mode 0600) while it runs
  ctl PATH <verb> [args] [--json]
        drive a running VM's control API: info, memory, dma, devices, pause, resume, stop,
        add-ram GPA SIZE [BACKEND], remove-ram GPA, resize-ram GPA SIZE, split-ram GPA AT,
        move-ram GPA TO, replace-ram GPA BACKEND, ping, update [--to COMMAND] (hand the
        VM to a new Pinion process, by default this build; reports the pause and each step)
  open --user UID [--iommu iommufd|legacy] [--device BDF]... [--memlock SIZE] -- <pinion run ...>
        as root: open /dev/kvm, /dev/iommu (per-process accounting) and the device
        cdevs, then run the VMM as UID with those fds and no privileges
  memlock plan --vm RAM[:DEVICES[:separate]]... [--json] | memlock status [--json]
        RLIMIT_MEMLOCK needed per path and mode; live locked/pinned memory
  demo [--kernel type1|compat|both]
        the main job: boot the rig and show what Pinion can assign there
Sizes are bytes or a number with K, M, G or T (64M, 1G).`;

type Command = (argv: string[]) => Promise<number> | number;

const COMMANDS: Record<string, () => Promise<Command>> = {
  rig: async () => (await import('./cli/rig.js')).rigCommand,
  run: async () => (await import('./cli/run.js')).runCommand,
  ctl: async () => (await import('./cli/ctl.js')).ctlCommand,
  demo: async () => (await import('./cli/demo.js')).demoCommand,
  open: async () => (await import('./cli/open.js')).openCommand,
  memlock: async () => (await import('./cli/memlock.js')).memlockCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '-h' || cmd === '--help') {
    console.log(USAGE);
    return 0;
  }
  if (cmd === '--version') {
    console.log(version());
    return 0;
  }
  if (cmd === undefined) return usageError('no command given; pinion --help lists them');
  if (cmd.startsWith('-')) return usageError(`unknown option ${cmd}; pinion takes --help, --version or a command (pinion --help)`);
  if (!Object.hasOwn(COMMANDS, cmd)) return usageError(`unknown command '${cmd}'; pinion --help lists them`);
  return (await COMMANDS[cmd]!())(rest);
}

function usageError(message: string): number {
  console.error(`pinion: ${message}`);
  return 2;
}

/** The version in package.json, found above this file: dist/bundle/pinion.js and dist/src/cli.js both sit two levels down. */
function version(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'pinion' && pkg.version) return pkg.version;
    }
    if (dirname(dir) === dir) throw new Error('package.json of pinion not found above the CLI; run it from its checkout or package');
  }
}

/** One line on stderr, never a stack trace, and the exit code the failure carries. */
function fail(e: unknown): never {
  const err = (e ?? {}) as { message?: unknown; exitCode?: unknown };
  const message = typeof err.message === 'string' ? err.message : String(e);
  // Frames a message carries (a native error's, or one that embeds a stack) are not for the user.
  const text = message
    .split('\n')
    .filter((l) => !/^\s+at /.test(l))
    .join('\n')
    .trim();
  console.error(`pinion: ${text}`);
  process.exit(typeof err.exitCode === 'number' ? err.exitCode : 1);
}

// A failure outside main's promise (an event handler's, a stray rejection) ends the same way.
process.on('uncaughtException', fail).on('unhandledRejection', fail);
main(process.argv.slice(2)).then((code) => process.exit(code), fail);
