import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImageHolders } from './image-holders.js';

describe('ImageHolders', () => {
  it('answers both ways, and forgets what a repository no longer holds', () => {
    const holders = new ImageHolders();
    holders.replace('team/app', ['a', 'b']);
    holders.replace('team/web', ['b', 'c']);
    assert.deepEqual(holders.holdersOf('b'), ['team/app', 'team/web']);
    assert.ok(holders.holds('team/app', 'a'));
    holders.replace('team/app', ['b']);
    assert.deepEqual(holders.holdersOf('a'), []);
    assert.ok(!holders.holds('team/app', 'a'));
    holders.replace('team/web', []);
    assert.deepEqual(holders.holdersOf('b'), ['team/app']);
    assert.deepEqual(holders.holdersOf('c'), []);
  });

  it('runs the refreshes of one repository one after the other: the last asked is the last recorded', async () => {
    const holders = new ImageHolders();
    let releaseFirst: () => void = () => undefined;
    const first = holders.refresh('team/app', () => new Promise<string[]>((resolve) => (releaseFirst = () => resolve(['old']))));
    const second = holders.refresh('team/app', () => Promise.resolve(['new']));
    // The second read has not started: it waits for the first, however slow.
    await new Promise((resolve) => setImmediate(resolve));
    releaseFirst();
    await Promise.all([first, second]);
    assert.deepEqual(holders.holdersOf('new'), ['team/app']);
    assert.deepEqual(holders.holdersOf('old'), []);
  });

  it('keeps the last record when a read fails, and the next refresh still runs', async () => {
    const holders = new ImageHolders();
    await holders.refresh('team/app', () => Promise.resolve(['a']));
    await assert.rejects(holders.refresh('team/app', () => Promise.reject(new Error('disk gone'))), /disk gone/);
    assert.deepEqual(holders.holdersOf('a'), ['team/app']);
    await holders.refresh('team/app', () => Promise.resolve(['b']));
    assert.deepEqual(holders.holdersOf('b'), ['team/app']);
  });
});
