// vm.update: the running machine as the old side of a live update drives it
// (src/update/outgoing.ts): the machine's refusals, image and state, the
// pause as one more hold on the vCPUs, and the control API's socket and own
// view, which the new process takes over.
import type { Machine } from '../machine/machine.js';
import type { OutgoingVm } from '../update/outgoing.js';
import type { ControlRecord } from '../update/record.js';
import type { ApiServer } from './server.js';

export interface UpdateHolds {
  /** Holds the vCPUs out of KVM_RUN for the update; resolves once they are. */
  hold(): Promise<void>;
  release(): void;
  record(): ControlRecord;
  server(): ApiServer | undefined;
}

export function outgoingVm(m: Machine, c: UpdateHolds): OutgoingVm {
  return {
    refusal: () => m.handoverRefusal(),
    image: () => m.handoverImage(),
    api: () => {
      const s = c.server();
      return s && { path: s.path, fd: s.fd, control: c.record() };
    },
    pause: () => c.hold(),
    freeze: () => m.freeze(),
    save: (mark) => m.saveState(mark),
    guestTsc: () => m.guestTsc(),
    thaw: () => m.thaw(),
    resume: () => c.release(),
    handedTo: (pid) => {
      m.release();
      c.server()?.handOver(`pid ${pid}`);
    },
  };
}
