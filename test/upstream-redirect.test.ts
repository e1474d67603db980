// Registries redirect blob downloads to a CDN. The mirror follows the redirect, verifies the bytes,
// and never sends the upstream's Authorization to the other host.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deterministicBytes } from './support/images.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const USER = 'mirror-bot';
const PASSWORD = 's3cret-redirect-password';

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

describe('upstream redirects', () => {
  const blob = deterministicBytes(3 * 1024 * 1024 + 17, 7);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const cdnRequests: IncomingHttpHeaders[] = [];
  const registryRequests: IncomingHttpHeaders[] = [];
  let cdn: Server;
  let registry: Server;
  let mirror: Regmirror;
  let work: string;

  before(async () => {
    work = await makeTempDir('redirect-');
    cdn = createServer((request, response) => {
      cdnRequests.push(request.headers);
      response.writeHead(200, { 'content-length': String(blob.length), 'content-type': 'application/octet-stream' });
      response.end(blob);
    });
    const cdnPort = await listen(cdn);
    const expected = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    registry = createServer((request, response) => {
      registryRequests.push(request.headers);
      if (request.headers.authorization !== expected) {
        response.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' });
        response.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        return;
      }
      if (request.url === `/v2/team/app/blobs/${digest}`) {
        response.writeHead(307, { location: `http://127.0.0.1:${cdnPort}/signed/blob?sig=abc` });
        response.end();
        return;
      }
      response.writeHead(404, { 'content-type': 'application/json' });
      response.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}');
    });
    const registryPort = await listen(registry);
    const config = path.join(work, 'config.yaml');
    await writeFile(
      config,
      `upstreams:\n  - registry: registry.example\n    url: http://127.0.0.1:${registryPort}\n    credentials: { username: ${USER}, password: ${PASSWORD} }\n`,
    );
    mirror = await startRegmirror({ configFile: config });
  });

  after(async () => {
    await mirror?.destroy();
    await new Promise((resolve) => cdn?.close(resolve));
    await new Promise((resolve) => registry?.close(resolve));
    await removeDir(work);
  });

  it('follows a redirect to another host without the upstream credentials, and verifies the bytes', async () => {
    const response = await fetch(`${mirror.url}/v2/team/app/blobs/${digest}`);
    assert.equal(response.status, 200);
    const body = Buffer.from(await response.arrayBuffer());
    assert.ok(body.equals(blob));
    assert.equal(cdnRequests.length, 1);
    assert.equal(cdnRequests[0]?.authorization, undefined, 'the CDN never sees Authorization');
    assert.ok(registryRequests.some((headers) => headers.authorization?.startsWith('Basic ')), 'the registry got Basic credentials');
    await mirror.settle();
    const everything = mirror.lines().join('\n');
    assert.ok(!everything.includes(PASSWORD), 'the password is not logged');
    assert.ok(!everything.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')), 'the Basic header is not logged');
  });
});
