// Tests for SingleFlight: callers share one run per key, the key is freed when the flight settles (or what it holds
// until), and a failure is shared and forgotten.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SingleFlight } from './single-flight.js';

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: Error) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('SingleFlight', () => {
  it('runs the work once for concurrent callers of one key, and again once it settled', async () => {
    const flights = new SingleFlight<string, number>();
    let runs = 0;
    const gate = deferred<number>();
    const work = (): Promise<number> => {
      runs += 1;
      return gate.promise;
    };
    const first = flights.run('a', work);
    const second = flights.run('a', work);
    assert.equal(first, second);
    assert.equal(flights.get('a'), first);
    gate.resolve(7);
    assert.deepEqual(await Promise.all([first, second]), [7, 7]);
    assert.equal(runs, 1);
    assert.equal(flights.get('a'), undefined);
    await flights.run('a', () => Promise.resolve(8));
    assert.equal(runs, 1, 'a new flight ran its own work');
  });

  it('keeps different keys apart', async () => {
    const flights = new SingleFlight<string, string>();
    const [a, b] = await Promise.all([flights.run('a', () => Promise.resolve('A')), flights.run('b', () => Promise.resolve('B'))]);
    assert.deepEqual([a, b], ['A', 'B']);
  });

  it('shares a failure with every caller, then forgets the key', async () => {
    const flights = new SingleFlight<string, number>();
    const gate = deferred<number>();
    const first = flights.run('a', () => gate.promise);
    const second = flights.run('a', () => Promise.resolve(1));
    gate.reject(new Error('boom'));
    await assert.rejects(first, /boom/);
    await assert.rejects(second, /boom/);
    assert.equal(flights.get('a'), undefined);
  });

  it('with holdUntil, keeps the key taken until what the value holds settles', async () => {
    const flights = new SingleFlight<string, { done: Promise<void> }>();
    const done = deferred<void>();
    const value = { done: done.promise };
    const flight = flights.run('a', () => Promise.resolve(value), (held) => held.done);
    assert.equal(await flight, value);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flights.get('a'), flight, 'still taken while the value runs');
    assert.deepEqual(flights.running(), [flight]);
    done.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flights.get('a'), undefined);
  });

  it('with holdUntil, frees the key when the held work fails too', async () => {
    const flights = new SingleFlight<string, { done: Promise<void> }>();
    const done = deferred<void>();
    await flights.run('a', () => Promise.resolve({ done: done.promise }), (held) => held.done);
    done.reject(new Error('fill failed'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flights.get('a'), undefined);
  });
});
