// The control API of a running VM (pinion run --api-socket PATH):
//   server.ts         HTTP/1.1 on the Unix socket, its limits, the socket's claim and mode
//   routes.ts         the verbs, the VmControl they drive, the JSON answers
//   memory-change.ts  memory change bodies parsed and planned against the map (pure)
//   vm-control.ts     MachineControl: the VmControl of a Machine
//   vm-update.ts      vm.update: the Machine as the old side of a live update drives it
//   errors.ts         ApiError: a status and one line
export { ApiServer, claimSocketPath, API_LIMITS } from './server.js';
export { route, ROUTES } from './routes.js';
export { API_STOP, MachineControl, UPDATE_LOST, UPDATE_STOP } from './vm-control.js';
