// Hosted repositories over HTTP, against a running regmirror: every upload form, manifests pushed and served as
// sent, referrers, deletes, and what goes wrong on purpose — malformed uploads, wrong digests, truncated and
// oversized bodies, missing blobs, races — with each limit (upload size, sessions, idle sessions) and what GC and
// eviction do with hosted content. The conformance suite (oci-conformance.test.ts) covers the protocol's happy paths.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const EMPTY_CONFIG = Buffer.from('{}');

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function bytesOf(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let index = 0; index < size; index++) bytes[index] = (index * 31 + seed * 17) & 0xff;
  return bytes;
}

interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(url, init);
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

function errorCode(answer: Answer): string | undefined {
  return (JSON.parse(answer.body.toString('utf8')) as { errors: Array<{ code: string }> }).errors[0]?.code;
}

function manifestOf(config: Buffer, layers: Buffer[], extra: Record<string, unknown> = {}): Buffer {
  const descriptor = (mediaType: string, bytes: Buffer): object => ({ mediaType, digest: sha256(bytes), size: bytes.length });
  // Spacing of its own: served exactly as sent, not re-serialised.
  return Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: descriptor('application/vnd.oci.empty.v1+json', config),
        layers: layers.map((layer) => descriptor('application/vnd.oci.image.layer.v1.tar', layer)),
        ...extra,
      },
      null,
      3,
    ),
  );
}

describe('hosted repositories', () => {
  let work: string;
  let registry: Regmirror;
  let url: string;

  const pushWhole = (name: string, bytes: Buffer): Promise<Answer> =>
    call(`${url}/v2/${name}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  const startUpload = async (name: string): Promise<string> => {
    const answer = await call(`${url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    assert.equal(answer.status, 202);
    const location = answer.headers.get('location');
    assert.ok(location?.startsWith(`/v2/${name}/blobs/uploads/`), String(location));
    return `${url}${location}`;
  };
  const putManifest = (name: string, reference: string, bytes: Buffer, contentType = OCI_MANIFEST): Promise<Answer> =>
    call(`${url}/v2/${name}/manifests/${reference}`, { method: 'PUT', body: bytes, headers: { 'content-type': contentType } });

  before(async () => {
    work = await makeTempDir('hosted-registry-');
    const config = path.join(work, 'config.yaml');
    await writeFile(config, ['cache:', '  maxSize: 64KiB', 'gc:', '  grace: 0s', '  interval: 0s', ''].join('\n'));
    registry = await startRegmirror({ configFile: config });
    url = registry.url;
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  describe('uploads', () => {
    it('takes a whole blob in one POST and serves it byte for byte, whole and in ranges', async () => {
      const blob = bytesOf(300_000, 1);
      const created = await pushWhole('team/whole', blob);
      assert.equal(created.status, 201);
      assert.equal(created.headers.get('location'), `/v2/team/whole/blobs/${sha256(blob)}`);
      assert.equal(created.headers.get('docker-content-digest'), sha256(blob));
      const got = await call(`${url}/v2/team/whole/blobs/${sha256(blob)}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(blob));
      const range = await call(`${url}/v2/team/whole/blobs/${sha256(blob)}`, { headers: { range: 'bytes=10-19' } });
      assert.equal(range.status, 206);
      assert.ok(range.body.equals(blob.subarray(10, 20)));
    });

    it('refuses a whole blob whose bytes do not match its digest, and keeps nothing', async () => {
      const blob = bytesOf(1_000, 2);
      const claimed = sha256(bytesOf(1_000, 3));
      const answer = await call(`${url}/v2/team/wrong/blobs/uploads/?digest=${claimed}`, { method: 'POST', body: blob });
      assert.equal(answer.status, 400);
      assert.equal(errorCode(answer), 'DIGEST_INVALID');
      assert.equal((await call(`${url}/v2/team/wrong/blobs/${claimed}`, { method: 'HEAD' })).status, 404);
      assert.equal((await call(`${url}/v2/team/wrong/blobs/${sha256(blob)}`, { method: 'HEAD' })).status, 404);
    });

    it('takes chunks in order, refuses repeated and out-of-order ones with 416 and the range it has', async () => {
      const blob = bytesOf(30, 4);
      const session = await startUpload('team/chunked');
      const chunk = (start: number, end: number): Promise<Answer> =>
        call(session, { method: 'PATCH', body: blob.subarray(start, end + 1), headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end}` } });
      const first = await chunk(0, 9);
      assert.equal(first.status, 202);
      assert.equal(first.headers.get('range'), '0-9');
      const repeated = await chunk(0, 9);
      assert.equal(repeated.status, 416);
      assert.equal(repeated.headers.get('range'), '0-9');
      assert.equal((await chunk(20, 29)).status, 416);
      assert.equal((await chunk(10, 19)).status, 202);
      const status = await call(session);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('range'), '0-19');
      assert.equal(new URL(status.headers.get('location') ?? '', url).pathname, new URL(session).pathname);
      const done = await call(`${session}?digest=${sha256(blob)}`, { method: 'PUT', body: blob.subarray(20), headers: { 'content-range': '20-29' } });
      assert.equal(done.status, 201);
      assert.ok((await call(`${url}/v2/team/chunked/blobs/${sha256(blob)}`)).body.equals(blob));
      assert.equal((await call(session)).status, 404, 'the session is spent');
    });

    it('takes a streamed PATCH without a range, then an empty PUT', async () => {
      const blob = bytesOf(2_500_000, 5);
      const session = await startUpload('team/streamed');
      assert.equal((await call(session, { method: 'PATCH', body: blob })).status, 202);
      assert.equal((await call(`${session}?digest=${sha256(blob)}`, { method: 'PUT' })).status, 201);
      assert.ok((await call(`${url}/v2/team/streamed/blobs/${sha256(blob)}`)).body.equals(blob));
    });

    it('refuses a wrong final digest, and the session is gone', async () => {
      const session = await startUpload('team/mismatch');
      await call(session, { method: 'PATCH', body: bytesOf(100, 6) });
      const answer = await call(`${session}?digest=${sha256(bytesOf(100, 7))}`, { method: 'PUT' });
      assert.equal(answer.status, 400);
      assert.equal(errorCode(answer), 'DIGEST_INVALID');
      assert.equal((await call(session)).status, 404);
    });

    it('answers malformed requests in the spec’s error shape', async () => {
      const session = await startUpload('team/malformed');
      const cases: Array<{ what: string; target: string; init: RequestInit; status: number; code: string }> = [
        { what: 'Content-Range not a range', target: session, init: { method: 'PATCH', body: 'x', headers: { 'content-range': 'bytes=a-b' } }, status: 400, code: 'BLOB_UPLOAD_INVALID' },
        { what: 'Content-Range ending before it starts', target: session, init: { method: 'PATCH', body: 'x', headers: { 'content-range': '5-2' } }, status: 416, code: 'RANGE_INVALID' },
        { what: 'PUT without a digest', target: session, init: { method: 'PUT' }, status: 400, code: 'DIGEST_INVALID' },
        { what: 'PUT with a malformed digest', target: `${session}?digest=sha256:abc`, init: { method: 'PUT' }, status: 400, code: 'DIGEST_INVALID' },
        { what: 'an unknown session', target: `${url}/v2/team/malformed/blobs/uploads/00000000-0000-4000-8000-000000000000`, init: {}, status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
        { what: 'a session id that is no UUID', target: `${url}/v2/team/malformed/blobs/uploads/..%2f..`, init: {}, status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
        { what: 'another repository’s session', target: session.replace('team/malformed', 'team/elsewhere'), init: {}, status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
        { what: 'a mount of a malformed digest', target: `${url}/v2/team/malformed/blobs/uploads/?mount=sha256:zz&from=team/whole`, init: { method: 'POST' }, status: 400, code: 'DIGEST_INVALID' },
        { what: 'a mount from a malformed name', target: `${url}/v2/team/malformed/blobs/uploads/?mount=${sha256(EMPTY_CONFIG)}&from=Team/X`, init: { method: 'POST' }, status: 400, code: 'NAME_INVALID' },
        { what: 'PUT to a blob URL', target: `${url}/v2/team/malformed/blobs/${sha256(EMPTY_CONFIG)}`, init: { method: 'PUT', body: EMPTY_CONFIG }, status: 405, code: 'UNSUPPORTED' },
        { what: 'PATCH without a session', target: `${url}/v2/team/malformed/blobs/uploads/`, init: { method: 'PATCH', body: 'x' }, status: 405, code: 'UNSUPPORTED' },
      ];
      for (const { what, target, init, status, code } of cases) {
        const answer = await call(target, init);
        assert.equal(answer.status, status, what);
        assert.equal(errorCode(answer), code, what);
      }
    });

    it('cuts a session whose chunk is shorter than its Content-Range, and keeps nothing of it', async () => {
      const session = await startUpload('team/truncated');
      const answer = await call(session, { method: 'PATCH', body: bytesOf(50, 8), headers: { 'content-range': '0-99' } });
      assert.equal(answer.status, 400);
      assert.equal(errorCode(answer), 'SIZE_INVALID');
      assert.equal((await call(session)).status, 404);
    });

    it('drops a session whose client breaks off mid-chunk', async () => {
      const session = new URL(await startUpload('team/broken'));
      await new Promise<void>((resolve) => {
        const request = httpRequest({ host: session.hostname, port: session.port, path: session.pathname, method: 'PATCH', headers: { 'content-length': '1000000' } });
        request.on('error', () => resolve());
        request.write(bytesOf(100_000, 9), () => setTimeout(() => request.destroy(), 100));
        request.on('close', () => resolve());
      });
      // The server sees the cut once the socket closes: poll until the session is gone.
      let status = 0;
      for (let attempt = 0; attempt < 50; attempt++) {
        status = (await call(session.href)).status;
        if (status === 404) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(status, 404);
    });

    it('discards the body of a POST that starts a session or mounts, and keeps serving on the connection', async () => {
      const started = await call(`${url}/v2/team/bodied/blobs/uploads/`, { method: 'POST', body: bytesOf(200_000, 14) });
      assert.equal(started.status, 202);
      const mounted = await call(`${url}/v2/team/bodied/blobs/uploads/?mount=${sha256(bytesOf(10, 15))}&from=team/whole`, { method: 'POST', body: bytesOf(50_000, 16) });
      assert.equal(mounted.status, 202, 'nothing to mount: a session');
      assert.equal((await call(`${url}/v2/`)).status, 200);
    });

    it('cancels a session with DELETE', async () => {
      const session = await startUpload('team/cancelled');
      await call(session, { method: 'PATCH', body: bytesOf(10, 10) });
      assert.equal((await call(session, { method: 'DELETE' })).status, 204);
      assert.equal((await call(session)).status, 404);
      assert.equal((await call(session, { method: 'DELETE' })).status, 404);
    });

    it('mounts a blob from another repository, and starts a session when the source does not hold it', async () => {
      const blob = bytesOf(5_000, 11);
      await pushWhole('team/source', blob);
      const mounted = await call(`${url}/v2/team/target/blobs/uploads/?mount=${sha256(blob)}&from=team/source`, { method: 'POST' });
      assert.equal(mounted.status, 201);
      assert.equal(mounted.headers.get('location'), `/v2/team/target/blobs/${sha256(blob)}`);
      assert.ok((await call(`${url}/v2/team/target/blobs/${sha256(blob)}`)).body.equals(blob));
      const absent = await call(`${url}/v2/team/target2/blobs/uploads/?mount=${sha256(blob)}&from=team/nothing-here`, { method: 'POST' });
      assert.equal(absent.status, 202);
      assert.ok(absent.headers.get('location')?.startsWith('/v2/team/target2/blobs/uploads/'));
    });

    it('ignores containerd’s ns on a hosted repository, however it is written', async () => {
      const blob = bytesOf(100, 17);
      await pushWhole('team/ns', blob);
      for (const ns of ['docker.io', 'bad%0D%0Aheader', '%00', 'x'.repeat(3000)]) {
        const answer = await call(`${url}/v2/team/ns/blobs/${sha256(blob)}?ns=${ns}`);
        assert.equal(answer.status, 200, ns.slice(0, 20));
        assert.equal(answer.headers.get('oci-namespace'), null);
        assert.ok(answer.body.equals(blob));
      }
    });

    it('serves a blob only under a repository that holds it', async () => {
      const blob = bytesOf(700, 12);
      await pushWhole('team/owner', blob);
      const elsewhere = await call(`${url}/v2/team/stranger/blobs/${sha256(blob)}`);
      assert.equal(elsewhere.status, 404);
      assert.equal(errorCode(elsewhere), 'BLOB_UNKNOWN');
    });

    it('stores one blob pushed twice at once, byte-exact', async () => {
      const blob = bytesOf(1_500_000, 13);
      const answers = await Promise.all([pushWhole('team/race', blob), pushWhole('team/race', blob), pushWhole('team/race2', blob)]);
      assert.deepEqual(
        answers.map((answer) => answer.status),
        [201, 201, 201],
      );
      assert.ok((await call(`${url}/v2/team/race/blobs/${sha256(blob)}`)).body.equals(blob));
      assert.ok((await call(`${url}/v2/team/race2/blobs/${sha256(blob)}`)).body.equals(blob));
    });
  });

  describe('manifests', () => {
    const layer = bytesOf(4_000, 20);
    before(async () => {
      assert.equal((await pushWhole('team/app', EMPTY_CONFIG)).status, 201);
      assert.equal((await pushWhole('team/app', layer)).status, 201);
    });

    it('stores a manifest exactly as sent, by tag, and serves it by tag and digest', async () => {
      const manifest = manifestOf(EMPTY_CONFIG, [layer]);
      const created = await putManifest('team/app', 'v1', manifest);
      assert.equal(created.status, 201);
      assert.equal(created.headers.get('docker-content-digest'), sha256(manifest));
      assert.equal(created.headers.get('location'), `/v2/team/app/manifests/${sha256(manifest)}`);
      for (const reference of ['v1', sha256(manifest)]) {
        const got = await call(`${url}/v2/team/app/manifests/${reference}`, { headers: { accept: OCI_MANIFEST } });
        assert.equal(got.status, 200);
        assert.equal(got.headers.get('content-type'), OCI_MANIFEST);
        assert.ok(got.body.equals(manifest), 'byte for byte');
      }
    });

    it('refuses manifests that reference what the repository does not hold, or that are not what they say', async () => {
      const missing = bytesOf(10, 21);
      const elsewhere = bytesOf(10, 22);
      await pushWhole('team/other-app', elsewhere);
      const cases: Array<{ what: string; reference: string; bytes: Buffer; contentType?: string; status: number; code: string }> = [
        { what: 'a layer nobody pushed', reference: 'bad1', bytes: manifestOf(EMPTY_CONFIG, [missing]), status: 400, code: 'MANIFEST_BLOB_UNKNOWN' },
        { what: 'a layer of another repository', reference: 'bad2', bytes: manifestOf(EMPTY_CONFIG, [elsewhere]), status: 400, code: 'MANIFEST_BLOB_UNKNOWN' },
        { what: 'not JSON', reference: 'bad3', bytes: Buffer.from('{"schemaVersion": 2,'), status: 400, code: 'MANIFEST_INVALID' },
        { what: 'a Content-Type other than its mediaType', reference: 'bad4', bytes: manifestOf(EMPTY_CONFIG, [layer]), contentType: 'application/vnd.docker.distribution.manifest.v2+json', status: 400, code: 'MANIFEST_INVALID' },
        { what: 'an unsupported media type', reference: 'bad5', bytes: Buffer.from('{"schemaVersion":1}'), contentType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', status: 400, code: 'MANIFEST_INVALID' },
        { what: 'a digest reference its bytes do not match', reference: sha256(Buffer.from('other')), bytes: manifestOf(EMPTY_CONFIG, [layer]), status: 400, code: 'DIGEST_INVALID' },
        { what: 'a tag that fails the grammar', reference: '.invalid', bytes: manifestOf(EMPTY_CONFIG, [layer]), status: 400, code: 'TAG_INVALID' },
        { what: 'more than 4 MiB', reference: 'huge', bytes: Buffer.concat([manifestOf(EMPTY_CONFIG, [layer]).subarray(0, -1), Buffer.from(`,"annotations":{"x":"${'x'.repeat(4 * 1024 * 1024)}"}}`)]), status: 413, code: 'MANIFEST_INVALID' },
        {
          what: 'an index of a child manifest the repository does not hold',
          reference: 'bad6',
          bytes: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(Buffer.from('x')), size: 1 }] })),
          contentType: 'application/vnd.oci.image.index.v1+json',
          status: 400,
          code: 'MANIFEST_BLOB_UNKNOWN',
        },
      ];
      for (const { what, reference, bytes, contentType, status, code } of cases) {
        const answer = await putManifest('team/app', reference, bytes, contentType);
        assert.equal(answer.status, status, what);
        assert.equal(errorCode(answer), code, what);
        if (!reference.startsWith('sha256:') && !reference.startsWith('.')) assert.equal((await call(`${url}/v2/team/app/manifests/${reference}`)).status, 404, `${what}: nothing stored`);
      }
    });

    it('takes a manifest with a subject, says so in OCI-Subject, and lists it among the subject’s referrers', async () => {
      const image = manifestOf(EMPTY_CONFIG, [layer], { annotations: { purpose: 'image' } });
      await putManifest('team/app', 'signed', image);
      const signature = manifestOf(EMPTY_CONFIG, [layer], { artifactType: 'application/vnd.example.signature', subject: { mediaType: OCI_MANIFEST, digest: sha256(image), size: image.length }, annotations: { by: 'test' } });
      const created = await putManifest('team/app', sha256(signature), signature);
      assert.equal(created.status, 201);
      assert.equal(created.headers.get('oci-subject'), sha256(image));
      const listed = await call(`${url}/v2/team/app/referrers/${sha256(image)}`);
      assert.equal(listed.status, 200);
      assert.equal(listed.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
      const index = JSON.parse(listed.body.toString('utf8')) as { manifests: Array<Record<string, unknown>> };
      assert.deepEqual(index.manifests, [{ mediaType: OCI_MANIFEST, digest: sha256(signature), size: signature.length, artifactType: 'application/vnd.example.signature', annotations: { by: 'test' } }]);
      const filtered = await call(`${url}/v2/team/app/referrers/${sha256(image)}?artifactType=application/vnd.example.sbom`);
      assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
      assert.deepEqual((JSON.parse(filtered.body.toString('utf8')) as { manifests: unknown[] }).manifests, []);
      // Another repository holding none of them sees none.
      const elsewhere = await call(`${url}/v2/team/other-app/referrers/${sha256(image)}`);
      assert.deepEqual((JSON.parse(elsewhere.body.toString('utf8')) as { manifests: unknown[] }).manifests, []);
    });

    it('pages tag lists itself with n and last, with a Link to the next page', async () => {
      const manifest = manifestOf(EMPTY_CONFIG, [layer]);
      for (const tag of ['t1', 't2', 't3', 't4']) await putManifest('team/paged', tag, manifest).catch(() => undefined);
      // team/paged holds no blobs yet: those pushes were refused; push its blobs and try again.
      await call(`${url}/v2/team/paged/blobs/uploads/?mount=${sha256(EMPTY_CONFIG)}&from=team/app`, { method: 'POST' });
      await call(`${url}/v2/team/paged/blobs/uploads/?mount=${sha256(layer)}&from=team/app`, { method: 'POST' });
      for (const tag of ['t1', 't2', 't3', 't4']) assert.equal((await putManifest('team/paged', tag, manifest)).status, 201);
      const first = await call(`${url}/v2/team/paged/tags/list?n=2`);
      assert.deepEqual(JSON.parse(first.body.toString('utf8')), { name: 'team/paged', tags: ['t1', 't2'] });
      assert.equal(first.headers.get('link'), '</v2/team/paged/tags/list?n=2&last=t2>; rel="next"');
      const second = await call(`${url}/v2/team/paged/tags/list?n=2&last=t2`);
      assert.deepEqual(JSON.parse(second.body.toString('utf8')), { name: 'team/paged', tags: ['t3', 't4'] });
      assert.equal(second.headers.get('link'), null);
      assert.equal((await call(`${url}/v2/team/never-pushed/tags/list`)).status, 404);
    });

    it('deletes a tag, a manifest by digest (its tags with it) and a blob; what is gone is 404', async () => {
      const manifest = manifestOf(EMPTY_CONFIG, [layer], { annotations: { doomed: 'yes' } });
      await putManifest('team/app', 'doomed', manifest);
      await putManifest('team/app', 'doomed-too', manifest);
      assert.equal((await call(`${url}/v2/team/app/manifests/doomed-too`, { method: 'DELETE' })).status, 202);
      assert.equal((await call(`${url}/v2/team/app/manifests/doomed-too`)).status, 404);
      assert.equal((await call(`${url}/v2/team/app/manifests/doomed`)).status, 200, 'the other tag stays');
      assert.equal((await call(`${url}/v2/team/app/manifests/${sha256(manifest)}`, { method: 'DELETE' })).status, 202);
      assert.equal((await call(`${url}/v2/team/app/manifests/${sha256(manifest)}`)).status, 404);
      assert.equal((await call(`${url}/v2/team/app/manifests/doomed`)).status, 404, 'its tags went with it');
      assert.equal((await call(`${url}/v2/team/app/manifests/${sha256(manifest)}`, { method: 'DELETE' })).status, 404);
      const blob = bytesOf(900, 23);
      await pushWhole('team/app', blob);
      assert.equal((await call(`${url}/v2/team/app/blobs/${sha256(blob)}`, { method: 'DELETE' })).status, 202);
      assert.equal((await call(`${url}/v2/team/app/blobs/${sha256(blob)}`)).status, 404);
      assert.equal((await call(`${url}/v2/team/app/manifests/.bad`, { method: 'DELETE' })).status, 404);
    });

    it('finishes a pull already streaming when its blob is deleted, then answers 404', async () => {
      const blob = bytesOf(8 * 1024 * 1024, 24);
      await pushWhole('team/pulled', blob);
      const response = await fetch(`${url}/v2/team/pulled/blobs/${sha256(blob)}`);
      assert.equal((await call(`${url}/v2/team/pulled/blobs/${sha256(blob)}`, { method: 'DELETE' })).status, 202);
      const body = Buffer.from(await response.arrayBuffer());
      assert.ok(body.equals(blob), 'the pull in progress is whole');
      assert.equal((await call(`${url}/v2/team/pulled/blobs/${sha256(blob)}`)).status, 404);
    });
  });

  describe('garbage collection and eviction', () => {
    it('never evicts hosted content, however far past cache.maxSize', async () => {
      const blob = bytesOf(200_000, 30);
      await pushWhole('team/kept', blob);
      // The bound is 64 KiB: every store asks for an eviction run; give it time to run.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      assert.ok((await call(`${url}/v2/team/kept/blobs/${sha256(blob)}`)).body.equals(blob));
    });

    it('collects what deletes unlinked and blobs no manifest references; keeps every manifest held, tagged or not, with its blobs', async () => {
      const layer = bytesOf(3_000, 31);
      const unused = bytesOf(3_000, 32);
      await pushWhole('team/gc', EMPTY_CONFIG);
      await pushWhole('team/gc', layer);
      await pushWhole('team/gc', unused);
      const untagged = manifestOf(EMPTY_CONFIG, [layer], { annotations: { tagged: 'no' } });
      assert.equal((await putManifest('team/gc', sha256(untagged), untagged)).status, 201);
      const deleted = manifestOf(EMPTY_CONFIG, [layer], { annotations: { deleted: 'yes' } });
      await putManifest('team/gc', 'gone', deleted);
      assert.equal((await call(`${url}/v2/team/gc/manifests/${sha256(deleted)}`, { method: 'DELETE' })).status, 202);
      const report = await call(`${url}/_regmirror/gc`, { method: 'POST' });
      assert.equal(report.status, 200, report.body.toString('utf8'));
      const removed = (JSON.parse(report.body.toString('utf8')) as { removed: { blob: number; manifest: number } }).removed;
      assert.ok(removed.manifest >= 1 && removed.blob >= 1, JSON.stringify(removed));
      assert.ok((await call(`${url}/v2/team/gc/manifests/${sha256(untagged)}`)).body.equals(untagged), 'an untagged manifest the repository holds stays');
      assert.ok((await call(`${url}/v2/team/gc/blobs/${sha256(layer)}`)).body.equals(layer), 'and so do its blobs');
      assert.equal((await call(`${url}/v2/team/gc/blobs/${sha256(unused)}`)).status, 404, 'a blob no manifest references goes (gc.grace is 0 here)');
      // Pushed again after collection: stored anew.
      assert.equal((await pushWhole('team/gc', unused)).status, 201);
      assert.ok((await call(`${url}/v2/team/gc/blobs/${sha256(unused)}`)).body.equals(unused));
    });
  });
});

describe('hosted repositories: limits and switches', () => {
  let work: string;
  let registry: Regmirror;

  before(async () => {
    work = await makeTempDir('hosted-limits-');
    const config = path.join(work, 'config.yaml');
    await writeFile(config, ['limits:', '  uploadSize: 1KiB', '  uploadSessions: 2', 'timeouts:', '  uploadIdle: 1s', 'delete:', '  enabled: false', ''].join('\n'));
    registry = await startRegmirror({ configFile: config });
  });

  after(async () => {
    await registry?.destroy();
    await removeDir(work);
  });

  it('refuses a blob past limits.uploadSize with 413, and keeps nothing', async () => {
    const blob = bytesOf(2_000, 40);
    const answer = await call(`${registry.url}/v2/team/big/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
    assert.equal(answer.status, 413);
    assert.equal(errorCode(answer), 'SIZE_INVALID');
    assert.equal((await call(`${registry.url}/v2/team/big/blobs/${sha256(blob)}`, { method: 'HEAD' })).status, 404);
  });

  it('opens at most limits.uploadSessions sessions (429 past them), and cancels idle ones after timeouts.uploadIdle', async () => {
    const open = async (): Promise<Answer> => call(`${registry.url}/v2/team/sessions/blobs/uploads/`, { method: 'POST' });
    const first = await open();
    const second = await open();
    assert.deepEqual([first.status, second.status], [202, 202]);
    const third = await open();
    assert.equal(third.status, 429);
    assert.equal(errorCode(third), 'TOOMANYREQUESTS');
    // Idle for 1 s: swept within about a second more.
    let reopened = third.status;
    for (let attempt = 0; attempt < 40 && reopened !== 202; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      reopened = (await open()).status;
    }
    assert.equal(reopened, 202);
    assert.equal((await call(`${registry.url}${first.headers.get('location') ?? ''}`)).status, 404, 'the idle session is gone');
  });

  it('refuses deletes with delete.enabled: false', async () => {
    const blob = bytesOf(100, 41);
    assert.equal((await call(`${registry.url}/v2/team/nodelete/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob })).status, 201);
    const answer = await call(`${registry.url}/v2/team/nodelete/blobs/${sha256(blob)}`, { method: 'DELETE' });
    assert.equal(answer.status, 405);
    assert.equal(errorCode(answer), 'UNSUPPORTED');
    assert.equal((await call(`${registry.url}/v2/team/nodelete/blobs/${sha256(blob)}`, { method: 'HEAD' })).status, 200);
  });
});
