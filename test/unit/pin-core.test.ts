// The native chain: TypeScript -> N-API addon built by napi -> Rust -> libc.
import t from 'tap';
import { pinCore } from '../../src/memory/pin-core.js';

t.test('pin-core loads and answers', async (t) => {
  t.match(pinCore.version(), /^\d+\.\d+\.\d+$/);
  const ps = pinCore.pageSize();
  t.equal(ps, 4096, 'x86_64 base page');
});
