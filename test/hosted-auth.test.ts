// Hosted repositories with logins and rules: a push needs the push action (401 for an anonymous caller, 403 for a
// user without it), a delete the delete action; skopeo pushes with credentials through the token flow; a mount
// reads only from a repository the caller may pull, and an automatic mount (no source named) is an ordinary upload
// with auth on, so that knowing a digest reads nothing.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeHtpasswd } from './support/htpasswd.js';
import { buildImageLayout, pushLayout, type BuiltLayout } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { inspectRaw } from './support/skopeo.js';
import { makeTempDir, removeDir } from './support/temp.js';

const PASSWORDS = { writer: 'writer-secret-5a1c', reader: 'reader-secret-0b7e', other: 'other-secret-e3d9' };

function basic(user: keyof typeof PASSWORDS): string {
  return `Basic ${Buffer.from(`${user}:${PASSWORDS[user]}`).toString('base64')}`;
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

describe('hosted repositories with auth', { timeout: 180_000 }, () => {
  let work: string;
  let registry: Regmirror;
  let image: BuiltLayout;

  before(async () => {
    work = await makeTempDir('hosted-auth-');
    const htpasswd = path.join(work, 'htpasswd');
    await writeHtpasswd(htpasswd, PASSWORDS);
    const config = path.join(work, 'config.yaml');
    await writeFile(
      config,
      [
        'auth:',
        `  htpasswd: ${htpasswd}`,
        'access:',
        '  - users: [writer]',
        '    repositories: ["team/**"]',
        '    actions: [pull, push, delete]',
        '  - users: [reader]',
        '    repositories: ["team/**"]',
        '    actions: [pull]',
        '  - users: [other]',
        '    repositories: ["other/**"]',
        '    actions: [pull, push]',
        '',
      ].join('\n'),
    );
    registry = await startRegmirror({ configFile: config });
    image = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 40_000, seed: 81 }] }]);
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  it('lets skopeo push with the push action, and pull back with the pull action', async () => {
    await pushLayout(image, `${registry.host}/team/app:v1`, { creds: `writer:${PASSWORDS.writer}` });
    const manifest = await inspectRaw(`docker://${registry.host}/team/app:v1`, { tlsVerify: false, creds: `reader:${PASSWORDS.reader}` });
    assert.equal(sha256(manifest), image.images[0]?.manifestDigest);
  });

  it('refuses a push to an anonymous caller (401 with a challenge) and to a user without push (403)', async () => {
    const anonymous = await fetch(`${registry.url}/v2/team/app/blobs/uploads/`, { method: 'POST' });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:push"/);
    const reader = await fetch(`${registry.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { authorization: basic('reader') } });
    assert.equal(reader.status, 403);
    assert.equal(((await reader.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED');
    const deleting = await fetch(`${registry.url}/v2/team/app/manifests/v1`, { method: 'DELETE', headers: { authorization: basic('reader') } });
    assert.equal(deleting.status, 403);
  });

  it('mounts only from a repository the caller may pull, and takes no automatic mount with auth on', async () => {
    const layer = image.images[0]?.layerDigests[0];
    assert.ok(layer !== undefined);
    // other may push to other/**, but not read team/app: the mount is an upload session instead.
    const refused = await fetch(`${registry.url}/v2/other/copy/blobs/uploads/?mount=${layer}&from=team/app`, { method: 'POST', headers: { authorization: basic('other') } });
    assert.equal(refused.status, 202);
    assert.match(refused.headers.get('location') ?? '', /^\/v2\/other\/copy\/blobs\/uploads\//);
    const automatic = await fetch(`${registry.url}/v2/other/copy/blobs/uploads/?mount=${layer}`, { method: 'POST', headers: { authorization: basic('other') } });
    assert.equal(automatic.status, 202);
    assert.equal((await fetch(`${registry.url}/v2/other/copy/blobs/${layer}`, { method: 'HEAD', headers: { authorization: basic('other') } })).status, 404, 'nothing mounted');
    // writer may read team/app: its mount into team/copy is linked at once.
    const mounted = await fetch(`${registry.url}/v2/team/copy/blobs/uploads/?mount=${layer}&from=team/app`, { method: 'POST', headers: { authorization: basic('writer') } });
    assert.equal(mounted.status, 201);
  });

  it('lets the delete action delete', async () => {
    const digest = image.images[0]?.manifestDigest;
    assert.ok(digest !== undefined);
    const deleted = await fetch(`${registry.url}/v2/team/app/manifests/${digest}`, { method: 'DELETE', headers: { authorization: basic('writer') } });
    assert.equal(deleted.status, 202);
    assert.equal((await fetch(`${registry.url}/v2/team/app/manifests/v1`, { headers: { authorization: basic('reader') } })).status, 404);
  });
});
