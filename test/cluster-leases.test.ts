// The digests' leases across two cluster nodes (src/cluster/cluster.ts) on a real PostgreSQL: a removal leaves out
// what another node fills or commits; a commit waits while another node removes the digest, and goes on once it
// is done; a wait has its deadline.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Cluster } from '../src/cluster/cluster.js';
import type { Digest } from '../src/oci/digest.js';
import { RegistryError } from '../src/registry/errors.js';
import { startPostgres, type Postgres } from './support/postgres.js';

const digest = (label: string): Digest => `sha256:${createHash('sha256').update(label).digest('hex')}`;
const quiet = { warn: () => undefined, info: () => undefined };

describe('cluster leases for removals and commits', { timeout: 60_000 }, () => {
  let database: Postgres;
  let one: Cluster;
  let two: Cluster;

  before(async () => {
    database = await startPostgres();
    const schema = await database.schema();
    const open = (port: number, waitMs: number): Promise<Cluster> =>
      Cluster.open({ url: schema.url, password: undefined, statementTimeoutMs: 5_000, advertise: `http://127.0.0.1:${port}`, secret: 'leases-test-secret-0123456789', isStored: () => Promise.resolve(false), waitMs, log: quiet });
    one = await open(1, 5_000);
    two = await open(2, 600);
  });

  after(async () => {
    await one?.close();
    await two?.close();
    await database?.stop();
  });

  it('leaves out of a removal what another node holds, and lets a commit wait until the removal is done', async () => {
    const [a, b, c] = [digest('a'), digest('b'), digest('c')];
    const removal = await one.holdFree([a, b]);
    assert.deepEqual([...removal.held].sort(), [a, b].sort());
    const other = await two.holdFree([a, c]);
    assert.deepEqual([...other.held], [c], 'a is being removed on the other node');
    await other.release();

    let committed = false;
    const commit = two.holdForCommit(a).then((release) => {
      committed = true;
      return release;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(committed, false, 'the commit waits while the removal holds the digest');
    await removal.release();
    const release = await commit;
    assert.equal(committed, true);
    const meanwhile = await one.holdFree([a]);
    assert.equal(meanwhile.held.size, 0, 'and a removal now leaves the committing digest out');
    await release();
    const afterwards = await one.holdFree([a]);
    assert.equal(afterwards.held.size, 1);
    await afterwards.release();
  });

  it('leaves out a digest another node is filling, and gives up a commit wait at its deadline', async () => {
    const filled = digest('filled');
    const lease = await one.lease(filled);
    try {
      assert.equal((await two.holdFree([filled])).held.size, 0);
      // two waits at most 600 ms.
      await assert.rejects(two.holdForCommit(filled), (error: unknown) => error instanceof RegistryError && error.code === 'UNAVAILABLE');
    } finally {
      lease.release();
    }
  });
});
