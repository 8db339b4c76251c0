// Runs in L1: pinion open's hand-down checks (src/cli/inherited-fds.ts)
// against a real /dev/kvm fd: the right device passes, the same fd named as
// another device or a malformed table is refused. Prints one JSON object for
// test/rig/inherited-fds.test.ts.
import { closeSync, openSync } from 'node:fs';
import { openerFds } from '../../src/cli/inherited-fds.js';

const kvm = openSync('/dev/kvm', 'r');
const refusal = (env: NodeJS.ProcessEnv): { message?: string; exitCode?: number } => {
  try {
    openerFds(env);
    return {};
  } catch (e) {
    return { message: (e as Error).message, exitCode: (e as { exitCode?: number }).exitCode };
  }
};
const out = {
  kvm,
  passed: openerFds({ PINION_KVM_FD: String(kvm) }) ?? null,
  asIommufd: refusal({ PINION_KVM_FD: String(kvm), PINION_IOMMUFD_FD: String(kvm) }),
  asDevice: refusal({ PINION_KVM_FD: String(kvm), PINION_DEVICE_FDS: `0000:01:00.0=${kvm}` }),
  badTable: refusal({ PINION_KVM_FD: String(kvm), PINION_GROUP_FDS: '7' }),
};
closeSync(kvm);
console.log(JSON.stringify(out));
