import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Pacer } from './pacer.js';

describe('Pacer', () => {
  it('lets the event loop run once a slice is used, and not before', async () => {
    const pacer = new Pacer(5);
    assert.equal(pacer.pace(), undefined, 'within the slice: no pause');
    let timerRan = false;
    setImmediate(() => (timerRan = true));
    const started = performance.now();
    while (performance.now() - started < 6) {
      // work that holds the loop past the slice
    }
    const pause = pacer.pace();
    assert.ok(pause !== undefined);
    await pause;
    assert.equal(timerRan, true, 'what was waiting ran during the pause');
    assert.equal(pacer.pace(), undefined, 'a new slice starts after the pause');
  });
});
