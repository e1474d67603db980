// Bad input gets a clear error in the protocol's shape (DESIGN.md invariant 6): a table of malformed
// names, tags, digests, ranges, methods and endpoints sent with raw node:http (so `..` and percent
// escapes reach the mirror exactly as written) to a regmirror in front of a distribution 2.8.2 that
// holds one small image, so valid-but-missing requests are told apart from invalid ones. Every error
// is JSON `{"errors":[{code,message}]}` with the right status, never a stack trace or a path of the
// mirror's; HEAD answers like GET without a body; nothing lands outside the data directory; invalid
// requests never reach the upstream. Also the protocol headers on manifests and blobs.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { request, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from 'node:net';
import { startDistribution, type Distribution } from './support/distribution.js';
import { startFaultUpstream, type FaultUpstream } from './support/fault-upstream.js';
import { buildImageLayout, deterministicBytes, pushLayout, type BuiltImage } from './support/images.js';
import { makeV1Chain, V1Client, type V1Image } from './support/v1-client.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const REQUEST_TIMEOUT_MS = 20_000;
/** Appears in every attack path, so the file system and the upstream's log can be searched for it. */
const MARK = 'zzattack';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request over node:http with the request target sent exactly as given (no normalisation). */
function rawRequest(port: number, method: string, target: string, headers: Record<string, string> = {}, body?: Buffer): Promise<RawResponse> {
  return new Promise<RawResponse>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path: target, headers: { ...headers, ...(body === undefined ? {} : { 'content-length': String(body.length) }) }, agent: false, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.once('error', reject);
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.once('timeout', () => req.destroy(new Error(`${method} ${target}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.once('error', reject);
    req.end(body);
  });
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map((entry) => entry.toString()).sort();
}

interface Case {
  what: string;
  method?: string;
  target: string;
  headers?: Record<string, string>;
  body?: Buffer;
  status: number;
  /** The OCI error code; `undefined` accepts any code (the body must still be an OCI error). */
  code: string | undefined;
  /** Whether a HEAD of the same target must answer the same status (GETs only); default true. */
  head?: boolean;
}

describe('bad requests get clear OCI errors', () => {
  let work: string;
  let dataDir: string;
  let upstream: Distribution;
  let mirror: Regmirror;
  let image: BuiltImage;
  let layer: Buffer;
  let layerDigest: string;

  before(async () => {
    work = await makeTempDir('bad-requests-');
    dataDir = path.join(work, 'data');
    upstream = await startDistribution();
    const layout = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 3_000, seed: 501 }] }]);
    const built = layout.images[0];
    assert.ok(built !== undefined);
    image = built;
    layerDigest = image.layerDigests[0] ?? '';
    layer = await readFile(path.join(layout.dir, 'blobs', 'sha256', layerDigest.slice(7)));
    await pushLayout(layout, `127.0.0.1:${upstream.port}/team/app:v1`);
    await removeDir(layout.dir); // only the mirror's data dir may remain under work
    mirror = await startRegmirror({ upstreams: [upstream.url], dataDir });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  it('serves manifests with digest, media type and ETag, and honours If-None-Match', async () => {
    const get = await rawRequest(mirror.port, 'GET', '/v2/team/app/manifests/v1', { accept: OCI_MANIFEST });
    assert.equal(get.status, 200);
    assert.ok(get.body.equals(image.manifestBytes), 'exact manifest bytes');
    assert.equal(get.headers['docker-content-digest'], image.manifestDigest);
    assert.equal(get.headers['content-type'], OCI_MANIFEST);
    assert.equal(get.headers.etag, `"${image.manifestDigest}"`);
    assert.equal(get.headers['content-length'], String(image.manifestBytes.length));

    const head = await rawRequest(mirror.port, 'HEAD', '/v2/team/app/manifests/v1', { accept: OCI_MANIFEST });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['docker-content-digest'], image.manifestDigest);
    assert.equal(head.headers['content-type'], OCI_MANIFEST);
    assert.equal(head.headers['content-length'], String(image.manifestBytes.length));

    const byDigest = await rawRequest(mirror.port, 'GET', `/v2/team/app/manifests/${image.manifestDigest}`, { accept: OCI_MANIFEST });
    assert.equal(byDigest.status, 200);
    assert.ok(byDigest.body.equals(image.manifestBytes));

    for (const target of ['/v2/team/app/manifests/v1', `/v2/team/app/manifests/${image.manifestDigest}`]) {
      for (const etag of [`"${image.manifestDigest}"`, `W/"sha256:${'0'.repeat(64)}", "${image.manifestDigest}"`]) {
        const notModified = await rawRequest(mirror.port, 'GET', target, { accept: OCI_MANIFEST, 'if-none-match': etag });
        assert.equal(notModified.status, 304, `${target} If-None-Match ${etag}`);
        assert.equal(notModified.body.length, 0, '304 has no body');
      }
    }
    const otherEtag = await rawRequest(mirror.port, 'GET', '/v2/team/app/manifests/v1', { accept: OCI_MANIFEST, 'if-none-match': `"sha256:${'0'.repeat(64)}"` });
    assert.equal(otherEtag.status, 200);
    assert.ok(otherEtag.body.equals(image.manifestBytes));
  });

  it('serves blobs with length and digest, on HEAD as on GET', async () => {
    const get = await rawRequest(mirror.port, 'GET', `/v2/team/app/blobs/${layerDigest}`);
    assert.equal(get.status, 200);
    assert.ok(get.body.equals(layer));
    assert.equal(sha256(get.body), layerDigest);
    const head = await rawRequest(mirror.port, 'HEAD', `/v2/team/app/blobs/${layerDigest}`);
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['content-length'], String(layer.length));
    assert.equal(head.headers['docker-content-digest'], layerDigest);
    const configHead = await rawRequest(mirror.port, 'HEAD', `/v2/team/app/blobs/${image.configDigest}`);
    assert.equal(configHead.status, 200);
    assert.equal(configHead.headers['content-length'], String(image.configBytes.length));
    assert.equal(configHead.headers['docker-content-digest'], image.configDigest);
  });

  it('answers ranges on a cached blob as HTTP says', async () => {
    const target = `/v2/team/app/blobs/${layerDigest}`;
    const size = layer.length;
    assert.equal((await rawRequest(mirror.port, 'GET', target)).status, 200); // cached now (the blob test filled it)
    await mirror.fillsSettled();
    assert.ok((await mirror.metricValue('regmirror_fills_total', { outcome: 'committed' })) >= 1);

    const whole = async (range: string): Promise<void> => {
      const response = await rawRequest(mirror.port, 'GET', target, { range });
      assert.equal(response.status, 200, `${range}: a range to ignore gets the whole blob`);
      assert.ok(response.body.equals(layer), `${range}: whole body`);
      assert.equal(response.headers['content-range'], undefined);
    };
    await whole('bytes=9-0');
    await whole('bytes=0-1,4-5');
    await whole('bytes=abc');

    const partial = async (range: string, start: number, end: number): Promise<void> => {
      const response = await rawRequest(mirror.port, 'GET', target, { range });
      assert.equal(response.status, 206, range);
      assert.ok(response.body.equals(layer.subarray(start, end + 1)), `${range}: bytes ${start}-${end}`);
      assert.equal(response.headers['content-range'], `bytes ${start}-${end}/${size}`);
      assert.equal(response.headers['content-length'], String(end - start + 1));
      assert.equal(response.headers['docker-content-digest'], layerDigest, 'the digest of the whole blob, also on a 206');
      const head = await rawRequest(mirror.port, 'HEAD', target, { range });
      assert.equal(head.status, 206, `HEAD ${range}`);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers['content-range'], `bytes ${start}-${end}/${size}`);
    };
    await partial('bytes=-5', size - 5, size - 1);
    await partial('bytes=10-', 10, size - 1);
    await partial('bytes=0-0', 0, 0);
    await partial(`bytes=100-${size + 1000}`, 100, size - 1);

    for (const method of ['GET', 'HEAD']) {
      for (const range of ['bytes=999999999-', `bytes=${size}-`]) {
        const response = await rawRequest(mirror.port, method, target, { range });
        assert.equal(response.status, 416, `${method} ${range}`);
        assert.equal(response.headers['content-range'], `bytes */${size}`);
        assert.match(String(response.headers['content-type']), /^application\/json/);
        if (method === 'GET') {
          const body = JSON.parse(response.body.toString()) as { errors: Array<{ code: string; message: string }> };
          assert.equal(body.errors[0]?.code, 'RANGE_INVALID');
        } else {
          assert.equal(response.body.length, 0);
        }
      }
    }
  });

  it('answers every malformed request with the right status and OCI error, and touches nothing outside its data dir', async () => {
    const hex = layerDigest.slice(7);
    const unknownDigest = `sha256:${'e'.repeat(64)}`;
    const cases: Case[] = [
      // names
      { what: 'capitals in the name', target: '/v2/Team/App/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: '.. segments', target: `/v2/../../${MARK}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: '.. inside the name', target: `/v2/team/../../../${MARK}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: '.. before a blob', target: `/v2/../../../../${MARK}/blobs/${layerDigest}`, status: 400, code: 'NAME_INVALID' },
      { what: '%2e%2e segments', target: `/v2/%2e%2e/%2e%2e/${MARK}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: '%2E%2E before a blob', target: `/v2/%2E%2E/%2E%2E/${MARK}/blobs/${layerDigest}`, status: 400, code: 'NAME_INVALID' },
      { what: '%2F inside the name', target: `/v2/team%2F..%2F${MARK}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: 'a percent escape of a valid name', target: '/v2/team/%61pp/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: '300-character name', target: `/v2/${'a'.repeat(300)}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: '256-character name', target: `/v2/${'b'.repeat(256)}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { what: 'empty component a//b', target: '/v2/team//app/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: 'name with a trailing /', target: '/v2/team/app//manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: 'name with a leading /', target: '/v2//team/app/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: 'name with a separator at the end', target: '/v2/team/app-/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { what: 'capital name on tags/list', target: '/v2/Team/tags/list', status: 400, code: 'NAME_INVALID' },
      { what: 'bad percent escape in the name', target: `/v2/team/%zz/${MARK}/manifests/v1`, status: 400, code: undefined },
      { what: 'lone % in a digest', target: '/v2/team/app/blobs/sha256:%', status: 400, code: undefined },
      { what: 'path with a trailing /', target: '/v2/team/app/manifests/v1/', status: 404, code: 'NOT_FOUND' },
      // tags
      { what: '129-character tag', target: `/v2/team/app/manifests/${'t'.repeat(129)}`, status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'tag starting with .', target: '/v2/team/app/manifests/.hidden', status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'tag ..', target: '/v2/team/app/manifests/..', status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'tag starting with -', target: '/v2/team/app/manifests/-v1', status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'tag with %2F..', target: `/v2/team/app/manifests/..%2F..%2F${MARK}`, status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'tag with an escaped NUL', target: '/v2/team/app/manifests/v1%00', status: 404, code: 'MANIFEST_UNKNOWN' },
      // digests
      { what: 'sha256 with 63 hex', target: `/v2/team/app/blobs/sha256:${hex.slice(1)}`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'manifest sha256 with 63 hex', target: `/v2/team/app/manifests/sha256:${hex.slice(1)}`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'sha256 with 65 hex', target: `/v2/team/app/blobs/sha256:${hex}0`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'uppercase hex', target: `/v2/team/app/blobs/sha256:${hex.toUpperCase()}`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'md5 digest', target: '/v2/team/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', status: 400, code: 'DIGEST_INVALID' },
      { what: 'sha256:xyz', target: '/v2/team/app/blobs/sha256:xyz', status: 400, code: 'DIGEST_INVALID' },
      { what: 'no algorithm', target: `/v2/team/app/blobs/${hex}`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'digest with ..', target: `/v2/team/app/blobs/sha256:..%2F..%2F${MARK}`, status: 400, code: 'DIGEST_INVALID' },
      { what: 'referrers with a bad digest', target: '/v2/team/app/referrers/sha256:xyz', status: 400, code: 'DIGEST_INVALID' },
      // valid but missing
      { what: 'unknown blob', target: `/v2/team/app/blobs/${unknownDigest}`, status: 404, code: 'BLOB_UNKNOWN' },
      { what: 'unknown manifest tag', target: '/v2/team/app/manifests/no-such-tag', status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: '128-character unknown tag', target: `/v2/team/app/manifests/${'t'.repeat(128)}`, status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'unknown manifest digest', target: `/v2/team/app/manifests/${unknownDigest}`, status: 404, code: 'MANIFEST_UNKNOWN' },
      { what: 'unknown repository', target: '/v2/team/nothing-here/manifests/v1', status: 404, code: 'MANIFEST_UNKNOWN' },
      // referrers: an artifactType filter that is no media type (nor could name one) is a bad request
      { what: 'referrers artifactType not a media type', target: `/v2/team/app/referrers/${image.manifestDigest}?artifactType=${MARK}`, status: 400, code: 'UNSUPPORTED' },
      { what: 'referrers artifactType of 5000 characters', target: `/v2/team/app/referrers/${image.manifestDigest}?artifactType=application/${MARK}${'x'.repeat(5000)}`, status: 400, code: 'UNSUPPORTED' },
      { what: 'referrers artifactType empty', target: `/v2/team/app/referrers/${image.manifestDigest}?artifactType=`, status: 400, code: 'UNSUPPORTED' },
      // writes are not supported
      { what: 'PUT manifest', method: 'PUT', target: '/v2/team/app/manifests/v1', headers: { 'content-type': OCI_MANIFEST }, body: image.manifestBytes, status: 405, code: 'UNSUPPORTED' },
      { what: 'PUT manifest without content type', method: 'PUT', target: '/v2/team/app/manifests/v2', body: Buffer.from('{}'), status: 405, code: 'UNSUPPORTED' },
      { what: 'DELETE manifest', method: 'DELETE', target: `/v2/team/app/manifests/${image.manifestDigest}`, status: 405, code: 'UNSUPPORTED' },
      { what: 'DELETE blob', method: 'DELETE', target: `/v2/team/app/blobs/${layerDigest}`, status: 405, code: 'UNSUPPORTED' },
      { what: 'PUT blob', method: 'PUT', target: `/v2/team/app/blobs/${layerDigest}`, headers: { 'content-type': 'application/octet-stream' }, body: layer, status: 405, code: 'UNSUPPORTED' },
      { what: 'POST upload', method: 'POST', target: '/v2/team/app/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
      { what: 'POST monolithic upload', method: 'POST', target: `/v2/team/app/blobs/uploads/?digest=${layerDigest}`, headers: { 'content-type': 'application/octet-stream' }, body: layer, status: 405, code: 'UNSUPPORTED' },
      { what: 'POST cross-mount', method: 'POST', target: `/v2/team/app/blobs/uploads/?mount=${layerDigest}&from=team/other`, status: 405, code: 'UNSUPPORTED' },
      { what: 'PATCH upload', method: 'PATCH', target: '/v2/team/app/blobs/uploads/0d9f3c1e-upload', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('chunk'), status: 405, code: 'UNSUPPORTED' },
      { what: 'PATCH of 3 MiB (over the body limit)', method: 'PATCH', target: '/v2/team/app/blobs/uploads/0d9f3c1e-upload', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(3 << 20, 7), status: 405, code: 'UNSUPPORTED' },
      { what: 'PUT upload', method: 'PUT', target: `/v2/team/app/blobs/uploads/0d9f3c1e-upload?digest=${layerDigest}`, status: 405, code: 'UNSUPPORTED' },
      { what: 'DELETE upload', method: 'DELETE', target: '/v2/team/app/blobs/uploads/0d9f3c1e-upload', status: 405, code: 'UNSUPPORTED' },
      { what: 'GET upload status', target: '/v2/team/app/blobs/uploads/0d9f3c1e-upload', status: 405, code: 'UNSUPPORTED' },
      { what: 'POST upload with .. name', method: 'POST', target: `/v2/../${MARK}/blobs/uploads/`, status: 400, code: 'NAME_INVALID' },
      // endpoints and queries
      { what: 'unknown path under /v2', target: '/v2/x/whatever', status: 404, code: 'NOT_FOUND' },
      { what: 'unknown path outside /v2', target: `/${MARK}/../../etc/passwd`, status: 404, code: 'NOT_FOUND' },
      { what: 'catalog n=abc', target: '/v2/_catalog?n=abc', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
      { what: 'catalog n=-1', target: '/v2/_catalog?n=-1', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
      { what: 'tags list n=abc', target: '/v2/team/app/tags/list?n=abc', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
      { what: 'ns naming no mirrored registry', target: `/v2/team/app/manifests/v1?ns=..%2F..%2F${MARK}`, status: 404, code: 'NAME_UNKNOWN' },
    ];

    const failures: string[] = [];
    const sent: string[] = [];
    for (const entry of cases) {
      const method = entry.method ?? 'GET';
      const variants = method === 'GET' && entry.head !== false ? ['GET', 'HEAD'] : [method];
      for (const variant of variants) {
        const label = `${entry.what}: ${variant} ${entry.target.slice(0, 120)}`;
        sent.push(label);
        const response = await rawRequest(mirror.port, variant, entry.target, entry.headers, variant === 'HEAD' ? undefined : entry.body);
        const text = response.body.toString('utf8');
        const problems: string[] = [];
        if (response.status !== entry.status) problems.push(`status ${response.status}, expected ${entry.status}`);
        if (!/^application\/json/.test(String(response.headers['content-type']))) problems.push(`content-type ${String(response.headers['content-type'])}`);
        if (variant === 'HEAD') {
          if (response.body.length !== 0) problems.push('HEAD with a body');
        } else {
          let code: unknown;
          let message: unknown;
          try {
            const parsed = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
            code = parsed.errors?.[0]?.code;
            message = parsed.errors?.[0]?.message;
          } catch {
            problems.push('body is not JSON');
          }
          if (entry.code === undefined ? typeof code !== 'string' || code === '' : code !== entry.code) {
            problems.push(`code ${String(code)}, expected ${entry.code ?? 'an OCI error code'}`);
          }
          if (typeof message !== 'string' || message === '') problems.push('no message');
        }
        const everything = `${JSON.stringify(response.headers)}\n${text}`;
        if (/\bat \S+ \(|\.[jt]s:\d+:\d+|"stack"/.test(everything)) problems.push('stack trace');
        for (const local of [dataDir, work, tmpdir() + path.sep, process.cwd()]) {
          if (everything.includes(local)) problems.push(`names the local path ${local}`);
        }
        if (everything.includes(`127.0.0.1:${upstream.port}`)) problems.push('names the upstream address');
        if (problems.length > 0) failures.push(`${label} → ${problems.join('; ')} | ${text.slice(0, 200)}`);
      }
    }
    assert.deepEqual(failures, [], `${failures.length} of ${sent.length} requests answered wrongly:\n${failures.join('\n')}`);

    // Nothing created next to the data dir or named after the attack paths; the upstream never saw them.
    assert.deepEqual(await readdir(work), ['data'], 'only the data dir under the work dir');
    const tree = await listTree(dataDir);
    assert.ok(tree.length > 0);
    const suspicious = tree.filter((entry) => /zzattack|passwd|%|\.\./i.test(entry));
    assert.deepEqual(suspicious, [], 'no attack-named files in the data dir');
    assert.deepEqual(
      (await readdir(path.dirname(work))).filter((entry) => entry.includes(MARK)),
      [],
      'nothing named after the attack next to the work dir',
    );
    await upstream.settle();
    const fromMirror = upstream.accessEntries().filter((entry) => entry.userAgent.startsWith('regmirror'));
    assert.ok(fromMirror.length > 0, 'the valid-but-missing requests did go upstream');
    const forwarded = fromMirror.filter((entry) => /zzattack|\.\.|%2e|%2f|%00|\/\/|md5:/i.test(entry.target) || /[A-Z]/.test(entry.path));
    assert.deepEqual(forwarded, [], 'invalid requests never reach the upstream');
    const upstreamStorage = await listTree(upstream.rootDir);
    assert.deepEqual(upstreamStorage.filter((entry) => entry.includes(MARK)), []);

    // Still healthy, and the client's mistakes never counted as the server's.
    const base = await rawRequest(mirror.port, 'GET', '/v2/');
    assert.equal(base.status, 200);
    assert.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');
    const manifest = await rawRequest(mirror.port, 'GET', '/v2/team/app/manifests/v1', { accept: OCI_MANIFEST });
    assert.equal(manifest.status, 200);
    assert.ok(manifest.body.equals(image.manifestBytes));
    assert.ok(!mirror.lines().some((line) => line.includes('unexpected error') || /"level":50/.test(line)), 'no error logged');
    assert.ok(mirror.accessEntries().every((entry) => entry.status < 500), 'no 5xx answered');
  });
});

describe('requests at the edges of HTTP: both APIs answer in their own shape, bodies nobody reads, clients that break off', { timeout: 120_000 }, () => {
  const big = deterministicBytes(2 * 1024 * 1024 + 3, 511);
  const bigDigest = sha256(big);
  const [v1Image] = makeV1Chain('edges', [{ size: 2 * 1024 * 1024 + 5, seed: 512 }]) as [V1Image];
  let upstream: FaultUpstream;
  let mirror: Regmirror;
  let plain: Regmirror;

  before(async () => {
    upstream = await startFaultUpstream({ blobs: [big], repository: 'team/app' });
    mirror = await startRegmirror({ upstreams: [upstream.url] });
    plain = await startRegmirror();
    await new V1Client(plain.url).push('team/app', 'latest', [v1Image]);
    // Cached, so what follows is served from the file.
    assert.equal((await rawRequest(mirror.port, 'GET', `/v2/team/app/blobs/${bigDigest}`)).body.length, big.length);
  });

  after(async () => {
    await mirror?.destroy();
    await plain?.destroy();
    await upstream?.stop();
  });

  it('answers a malformed escape and an unknown method in the v1 shape on v1 paths, and the OCI shape on v2 paths', async () => {
    for (const [method, target, status] of [
      ['GET', '/v1/users/%zz/', 400],
      ['GET', '/v1/repositories/team/app/%zz', 400],
      ['PROPFIND', '/v1/_ping', 405],
      ['TRACE', '/v1/search', 405],
      ['PROPFIND', '/_ping', 405],
    ] as const) {
      const response = await rawRequest(plain.port, method, target);
      assert.equal(response.status, status, `${method} ${target}`);
      const body = JSON.parse(response.body.toString()) as { error?: unknown };
      assert.equal(typeof body.error, 'string', `${method} ${target}: the v1 shape, got ${response.body.toString()}`);
    }
    for (const [method, target] of [
      ['GET', '/v2/%zz/manifests/latest'],
      ['PROPFIND', '/v2/'],
    ] as const) {
      const response = await rawRequest(plain.port, method, target);
      assert.ok(response.status >= 400 && response.status < 500, `${method} ${target}: ${response.status}`);
      assert.ok(Array.isArray((JSON.parse(response.body.toString()) as { errors?: unknown }).errors), `${method} ${target}: the OCI shape`);
    }
  });

  it('sends the whole answer to a GET that carries a body and closes its connection (the body is read and discarded)', async () => {
    // Larger than what node reads ahead into a paused request: unread, it would stay in the kernel until the close.
    const junk = Buffer.alloc(512 * 1024, 'j');
    for (let attempt = 0; attempt < 10; attempt++) {
      const blob = await rawRequest(mirror.port, 'GET', `/v2/team/app/blobs/${bigDigest}`, { connection: 'close' }, junk);
      assert.equal(blob.status, 200);
      assert.ok(blob.body.equals(big), `v2 blob, attempt ${attempt}: ${blob.body.length} of ${big.length} bytes`);
      const layer = await rawRequest(plain.port, 'GET', `/v1/images/${v1Image.id}/layer`, { connection: 'close' }, junk);
      assert.equal(layer.status, 200);
      assert.ok(layer.body.equals(v1Image.layer), `v1 layer, attempt ${attempt}: ${layer.body.length} of ${v1Image.layer.length} bytes`);
    }
  });

  it('takes a client that breaks off its push body for what it is: no error logged, nothing kept, still healthy', async () => {
    for (const target of ['/v1/repositories/team/app/tags/broken', `/v1/images/${'e'.repeat(64)}/json`]) {
      const socket = connect({ host: '127.0.0.1', port: plain.port });
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      socket.write(`PUT ${target} HTTP/1.1\r\nHost: registry\r\nContent-Length: 100\r\n\r\n"abc`);
      await new Promise((resolve) => setTimeout(resolve, 200));
      socket.destroy();
    }
    await plain.settle();
    assert.ok(!plain.lines().some((line) => line.includes('unexpected error') || /"level":50/.test(line)), 'no error logged');
    assert.equal((await rawRequest(plain.port, 'GET', '/v1/repositories/team/app/tags/broken')).status, 404);
    assert.equal((await rawRequest(plain.port, 'GET', '/v1/_ping')).status, 200);
  });
});
