// The SQLite metadata on a full disk: once its log has been checkpointed (on the worker thread), commits write
// the log again from its start, in the file's existing space, so small writes (a tag revalidated, reads flushed)
// still succeed while the disk has no byte free. A checkpoint that emptied the file (TRUNCATE) failed them.

import assert from 'node:assert/strict';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SqliteMetadataStore } from '../src/meta/sqlite-store.js';
import { CHECKPOINT_BYTES } from '../src/meta/wal-checkpointer.js';
import { digestOf } from '../src/oci/digest.js';
import { runCommand, unmountUnder } from './support/commands.js';
import { waitUntil } from './support/fault-upstream.js';
import { fillDisk } from './support/full-disk.js';
import { makeTempDir, removeDir } from './support/temp.js';

describe('the SQLite metadata on a full disk', () => {
  let mountPoint: string;

  before(async () => {
    mountPoint = await makeTempDir('metadata-full-disk-');
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mountPoint]);
  });

  after(async () => {
    if (mountPoint !== undefined) {
      await unmountUnder(mountPoint);
      await removeDir(mountPoint);
    }
  });

  it('still commits small writes once its log was checkpointed', async () => {
    const file = join(mountPoint, 'metadata.sqlite');
    const store = new SqliteMetadataStore(file);
    let fillers: string[] = [];
    try {
      // Past the log's limit, then a wait for the worker to copy it into the database.
      for (let index = 0; index < 96; index++) await store.putDocument(`document ${index}`, Buffer.alloc(64 * 1024, index), 1_000);
      assert.ok((await stat(`${file}-wal`)).size > CHECKPOINT_BYTES);
      await waitUntil('the worker checkpoints the log', async () => (await stat(file)).size >= 6 * 1024 * 1024);
      fillers = await fillDisk(mountPoint);
      const repository = { registry: 'docker.io', name: 'library/alpine' };
      const digest = digestOf(Buffer.from('tagged'));
      for (let round = 0; round < 20; round++) await store.putTag(repository, 'latest', { digest, fetchedAt: 2_000 + round });
      await store.putBlob(digest, 10, 3_000);
      assert.deepEqual(await store.getTag(repository, 'latest'), { digest, fetchedAt: 2_019 });
    } finally {
      for (const filler of fillers) await rm(filler, { force: true });
      await store.close();
    }
  });
});
