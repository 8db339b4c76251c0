#!/usr/bin/env node
// Formatting and lint checks: prettier, tsc, rustfmt, clippy, clang-format.
// `node scripts/lint.mjs` checks and prints one line per check, then exits
// non-zero when any failed; `--write` formats in place instead.
// scripts/test-all.mjs imports runLint() to count each check as one test.
import { spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const crate = join(root, 'crates/pin-core');
// A rustup toolchain lives in ~/.cargo/bin, which a non-login shell may lack.
const env = { ...process.env, PATH: `${join(homedir(), '.cargo/bin')}:${process.env.PATH}` };
const bin = (name) => join(root, 'node_modules/.bin', name);

function sh(cmd, args, cwd = root) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { code: r.error ? 127 : r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim(), missing: r.error?.code === 'ENOENT' };
}

function has(cmd, args, cwd) {
  return sh(cmd, args, cwd).code === 0;
}

function cFiles() {
  const r = sh('git', ['ls-files', '-z', '--', 'guest/*.c', 'guest/*.h', 'bench/ref/*.c', 'rig/guest/*.c']);
  return r.code === 0 ? r.out.split('\0').filter(Boolean) : [];
}

// Each check: { name, run() -> { code, out, skip? } }.
function checks(write) {
  const c = cFiles();
  const list = [
    { name: 'prettier', run: () => sh(bin('prettier'), [write ? '--write' : '--check', '--log-level=warn', '**/*.{ts,js,mjs}']) },
    { name: 'rustfmt', run: () => sh('cargo', write ? ['fmt'] : ['fmt', '--check'], crate) },
    {
      name: 'clang-format',
      run: () => {
        if (!has('clang-format', ['--version']))
          return { code: 1, out: 'clang-format is not installed: bash rig/install-host.sh (as root)' };
        return sh('clang-format', write ? ['-i', ...c] : ['--dry-run', '--Werror', ...c]);
      },
    },
  ];
  if (write) return list;
  return [
    ...list,
    { name: 'tsc', run: () => sh(bin('tsc'), ['--noEmit', '-p', 'tsconfig.json']) },
    {
      name: 'clippy',
      run: () => {
        // Debian's cargo ships without clippy: skip it there rather than fail the lint.
        if (!has('cargo', ['clippy', '--version'], crate)) return { code: 0, skip: true, out: 'cargo-clippy is not installed' };
        return sh('cargo', ['clippy', '--offline', '--quiet', '--all-targets', '--', '-D', 'warnings'], crate);
      },
    },
  ];
}

/** Runs every check and returns { passed, failed, skipped }, printing one line per check. */
export function runLint({ write = false } = {}) {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const check of checks(write)) {
    const t0 = Date.now();
    const r = check.run();
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (r.skip) {
      counts.skipped++;
      console.log(`ok - lint: ${check.name} # SKIP ${r.out}`);
    } else if (r.code === 0) {
      counts.passed++;
      console.log(`ok - lint: ${check.name} (${secs} s)`);
    } else {
      counts.failed++;
      console.log(`not ok - lint: ${check.name} (${secs} s)${r.missing ? ': not installed' : ''}`);
      if (r.out) console.log(r.out.replace(/^/gm, '#   '));
    }
  }
  return counts;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const write = process.argv.includes('--write');
  const { failed } = runLint({ write });
  if (!write) console.log(failed ? `lint: ${failed} check(s) failed` : 'lint: all checks passed');
  process.exit(failed ? 1 : 0);
}
