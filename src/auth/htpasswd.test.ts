import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { HtpasswdFile, parseHtpasswd } from './htpasswd.js';

describe('parseHtpasswd', () => {
  it('keeps bcrypt entries and says which lines it ignores', () => {
    const warnings: string[] = [];
    const hash = bcrypt.hashSync('secret', 4);
    const users = parseHtpasswd(`# comment\nalice:${hash}\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nno-colon\n\ncarol:${hash.replace('$2b$', '$2y$')}\n`, (line, reason) => warnings.push(`${line}: ${reason}`));
    assert.deepEqual([...users.keys()], ['alice', 'carol']);
    assert.deepEqual(warnings, ['3: the hash of bob is not bcrypt (use htpasswd -B)', '4: not NAME:HASH']);
  });
});

describe('HtpasswdFile', () => {
  let dir: string;
  let file: string;
  const log = { warn: () => undefined, error: () => undefined };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'regmirror-htpasswd-'));
    file = path.join(dir, 'htpasswd');
    await writeFile(file, `alice:${bcrypt.hashSync('secret', 4)}\n`);
  });

  after(() => rm(dir, { recursive: true, force: true }));

  it('checks names and passwords, and reads the file again when it changes', async () => {
    const htpasswd = await HtpasswdFile.open(file, log);
    assert.equal(await htpasswd.verify('alice', 'secret'), true);
    assert.equal(await htpasswd.verify('alice', 'wrong'), false);
    assert.equal(await htpasswd.verify('nobody', 'secret'), false);
    await writeFile(file, `alice:${bcrypt.hashSync('changed', 4)}\nbob:${bcrypt.hashSync('pw', 4)}\n`);
    // The file is looked at again at most once a second.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    assert.equal(await htpasswd.verify('alice', 'secret'), false, 'the old password no longer works, though it was remembered');
    assert.equal(await htpasswd.verify('alice', 'changed'), true);
    assert.equal(await htpasswd.verify('bob', 'pw'), true);
  });

  it('refuses to start without its file', async () => {
    await assert.rejects(HtpasswdFile.open(path.join(dir, 'missing'), log), { code: 'ENOENT' });
  });
});
