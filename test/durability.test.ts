// Commits are durable (issue 9, hole 13): the fs store's system calls, traced with strace, show that every
// rename into place is followed by an fsync of the folder that holds the new name (and of the folders above,
// when folders were made for it), and a delete by an fsync of its folder — all before the call returns, so
// before a client is told. Only the folder itself when it already existed: that is all a commit costs.

import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { requireCommand, runCommand } from './support/commands.js';
import { makeTempDir, removeDir } from './support/temp.js';

const STORE_MODULE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'store', 'fs-store.js');
/** The *at variants some architectures use, by the plain name. */
const PLAIN_NAMES: Record<string, string> = { renameat: 'rename', renameat2: 'rename', unlinkat: 'unlink', faccessat: 'access', faccessat2: 'access' };

/** One traced system call: its name and the paths it names (an fd's path thanks to strace -y). */
interface Call {
  name: string;
  paths: string[];
}

/** Runs store operations in a node process under strace; `mark(n)` in the script leaves a marker call in the trace. */
async function trace(work: string, script: string): Promise<Call[]> {
  const file = path.join(work, 'script.mjs');
  await writeFile(
    file,
    [
      `import { accessSync } from 'node:fs';`,
      `import { FsObjectStore } from ${JSON.stringify(pathToFileURL(STORE_MODULE).href)};`,
      `const root = ${JSON.stringify(path.join(work, 'data'))};`,
      `const mark = (n) => { try { accessSync(root + '/marker-' + n); } catch {} };`,
      `const store = new FsObjectStore(root);`,
      `await store.init();`,
      script,
    ].join('\n'),
  );
  const log = path.join(work, 'strace.log');
  await runCommand('strace', ['-f', '-y', '-qq', '-e', 'trace=rename,renameat,renameat2,fsync,fdatasync,unlink,unlinkat,access,faccessat,faccessat2', '-o', log, process.execPath, file]);
  const root = path.join(work, 'data');
  const calls: Call[] = [];
  for (const line of (await readFile(log, 'utf8')).split('\n')) {
    // `PID name(args…` (a call another thread interrupted ends `<unfinished ...>`: its start is what counts).
    const name = /^\d+\s+(\w+)\(/.exec(line)?.[1];
    // Quoted paths, and fds shown with their path by -y: `18<…/v1/images>`.
    const paths = [...line.matchAll(/"([^"]+)"|\d+<([^>]+)>/g)].map((found) => found[1] ?? found[2] ?? '');
    if (name === undefined || !paths.some((named) => named === root || named.startsWith(`${root}/`))) continue;
    calls.push({ name: PLAIN_NAMES[name] ?? name, paths: paths.map((named) => path.relative(root, named) || '.') });
  }
  return calls;
}

/** The calls after the one matching `from` up to the marker n, as `name path…` lines. */
function between(calls: Call[], from: (call: Call) => boolean, marker: number): string[] {
  const start = calls.findIndex(from);
  const end = calls.findIndex((call) => call.name === 'access' && call.paths[0] === `marker-${marker}`);
  assert.ok(start !== -1 && end > start, `the call, then marker ${marker}`);
  return calls.slice(start + 1, end).map((call) => `${call.name} ${call.paths.join(' ')}`);
}

describe('durable commits', { timeout: 60_000 }, () => {
  let work: string;

  before(async () => {
    await requireCommand('strace');
    work = await makeTempDir('durability-');
    await mkdir(path.join(work, 'data'));
  });

  after(async () => {
    await removeDir(work);
  });

  it('syncs the folder after a rename into place, and the folders above it that were made for it, before returning', async () => {
    const calls = await trace(
      work,
      [
        `await store.putBytes('v1/images/abc/json', Buffer.from('{}')); mark(1);`,
        `await store.putBytes('v1/images/abc/ancestry', Buffer.from('["abc"]')); mark(2);`,
        `const writer = await store.createWriter(); await writer.append(Buffer.from('layer'));`,
        `await writer.commit('v1/images/abc/layer'); mark(3); await writer.close();`,
      ].join('\n'),
    );
    const isRenameTo = (key: string) => (call: Call) => call.name === 'rename' && call.paths[1] === key;
    // Three folders made for the first file: each one's name is synced in its parent.
    assert.deepEqual(between(calls, isRenameTo('v1/images/abc/json'), 1), ['fsync v1/images/abc', 'fsync v1/images', 'fsync v1', 'fsync .']);
    // The folder existed: only it.
    assert.deepEqual(between(calls, isRenameTo('v1/images/abc/ancestry'), 2), ['fsync v1/images/abc']);
    assert.deepEqual(between(calls, isRenameTo('v1/images/abc/layer'), 3), ['fsync v1/images/abc']);
    // And the content itself before its rename.
    const layerRename = calls.findIndex(isRenameTo('v1/images/abc/layer'));
    const spoolPath = calls[layerRename]?.paths[0] ?? '';
    assert.ok(spoolPath.startsWith('tmp/'));
    assert.ok(calls.slice(0, layerRename).some((call) => (call.name === 'fdatasync' || call.name === 'fsync') && call.paths[0] === spoolPath), 'the spool is synced before its rename');
  });

  it("syncs the folder after a delete (completing a v1 push is deleting `_inprogress`), before returning", async () => {
    const calls = await trace(work, [`await store.putBytes('v1/images/def/_inprogress', Buffer.from('true'));`, `await store.delete('v1/images/def/_inprogress'); mark(4);`].join('\n'));
    assert.deepEqual(
      between(calls, (call) => call.name === 'unlink' && call.paths[0] === 'v1/images/def/_inprogress', 4),
      ['fsync v1/images/def'],
    );
  });
});
