// Live update: hand a running VM to a new Pinion process (pinion ctl PATH update).
//   wire.ts      reading a record from another process: typed fields, one-line refusals
//   record.ts    the record before the pause: header, fd list, how the VM was made, RAM, CPUID, the API's view
//   state.ts     the state at the pause: vCPUs, irqchips, PIT, clock, the board's devices
//   fds.ts       the fds as the new process has them, each checked for its kind
//   channel.ts   the messages between the two processes, one JSON line each
//   steps.ts     the steps in order, their times, what a failure at each undoes
//   outgoing.ts  the old process's side
//   peer.ts      starting the new process with the fds (exec inheritance)
//   incoming.ts  the new process's side
//   faults.ts    fault points of the new process, for tests
export { handOver, UpdateError, type UpdateReport } from './outgoing.js';
export { receive } from './incoming.js';
