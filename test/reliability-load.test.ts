// The load suite's short form (reliability/suites/load.ts): a regmirror in front of a token-authenticated
// distribution 2.8.2 under a mixed load on warm and cold content, then newcomers, with zero violations allowed
// (no error, no hang, memory bounded, verify clean). Latencies are reported, not judged: this runs on a busy
// machine. The figures show the load reached what it claims (cold fills, tokens, every kind of answer); and the
// generator's checks are shown to catch what they are meant to catch.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { LoadPlan, PlannedRequest } from '../reliability/lib/load-generator.js';
import { generateLoad } from '../reliability/lib/load-run.js';
import { describeViolation } from '../reliability/lib/result.js';
import { runLoad } from '../reliability/suites/load.js';
import { makeTempDir, removeDir } from './support/temp.js';

/**
 * A server on 127.0.0.1 that answers by path, right or wrong as the path says: what a real registry does not
 * do on demand. Every answer is keep-alive.
 */
async function misbehavingServer(): Promise<{ port: number; close(): Promise<void> }> {
  const answers: Record<string, string> = {
    '/ok': `HTTP/1.1 200 OK\r\nDocker-Content-Digest: ${DIGEST}\r\nContent-Length: 5\r\n\r\nhello`,
    '/chunked': `HTTP/1.1 200 OK\r\nDocker-Content-Digest: ${DIGEST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n`,
    '/range': 'HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nell',
    '/wrong-range': 'HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nxyz',
    '/wrong-body': `HTTP/1.1 200 OK\r\nDocker-Content-Digest: ${DIGEST}\r\nContent-Length: 5\r\n\r\nhellO`,
    '/wrong-digest': `HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:${'0'.repeat(64)}\r\nContent-Length: 5\r\n\r\nhello`,
    '/500': 'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops',
    '/short': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel',
    '/head-with-body': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
  };
  const answer = (socket: Socket, method: string, target: string): void => {
    const text = answers[target];
    if (text === undefined) return; // /hang
    if (target === '/short') socket.end(text);
    else socket.write(method === 'HEAD' && target !== '/head-with-body' ? text.slice(0, text.indexOf('\r\n\r\n') + 4) : text);
  };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let pending = '';
    socket.on('error', () => undefined);
    socket.on('data', (data: Buffer) => {
      pending += data.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
        const [method = '', target = ''] = pending.slice(0, end).split(' ');
        pending = pending.slice(end + 4);
        answer(socket, method, target);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return { port, close };
}

const BODY = Buffer.from('hello');
const DIGEST = `sha256:${createHash('sha256').update(BODY).digest('hex')}`;

describe('the load generator', () => {
  it('counts wrong statuses, bodies, digests, ranges, short bodies, stray bytes and hangs, and only those', async () => {
    const dir = await makeTempDir('load-generator-');
    const server = await misbehavingServer();
    try {
      const file = path.join(dir, 'blob');
      await writeFile(file, BODY);
      const request = (label: string, method: 'GET' | 'HEAD', target: string, expect: PlannedRequest['expect']): PlannedRequest => ({ label, method, path: target, headers: {}, releaseS: 0, expect });
      const whole = { status: 200, digest: DIGEST, length: 5, bodyDigest: DIGEST };
      const requests = [
        request('ok', 'GET', '/ok', whole),
        request('ok', 'GET', '/chunked', { status: 200, digest: DIGEST, bodyDigest: DIGEST }),
        request('ok', 'GET', '/range', { status: 206, length: 3, bodySlice: { file, start: 1, end: 3 } }),
        request('ok', 'HEAD', '/ok', { status: 200, digest: DIGEST, length: 5 }),
        request('wrong-range', 'GET', '/wrong-range', { status: 206, length: 3, bodySlice: { file, start: 1, end: 3 } }),
        request('wrong-body', 'GET', '/wrong-body', whole),
        request('wrong-digest', 'GET', '/wrong-digest', whole),
        request('500', 'GET', '/500', whole),
        request('short', 'GET', '/short', whole),
        request('head-with-body', 'HEAD', '/head-with-body', { status: 200, length: 5 }),
        request('hang', 'GET', '/hang', whole),
      ];
      const plan: LoadPlan = { port: server.port, connections: 8, openGapMs: 0, durationS: 2, answerDeadlineMs: 1_000, seed: 7, groups: [{ name: 'all', weight: 1, requests, favourNewest: false }] };
      const { report } = await generateLoad(plan, { serverPid: undefined, dir });
      const problems = new Map(report.errorExamples.map((example) => [example.label, example.problem]));
      assert.equal(report.byLabel.ok?.errors, 0, `right answers pass: ${JSON.stringify(report.errorExamples)}`);
      assert.ok((report.byLabel.ok?.count ?? 0) > 8, 'right answers came back on kept-alive connections');
      assert.match(problems.get('wrong-range') ?? '', /range body differs/);
      assert.match(problems.get('wrong-body') ?? '', /hashes to/);
      assert.match(problems.get('wrong-digest') ?? '', /Docker-Content-Digest/);
      assert.match(problems.get('500') ?? '', /answered 500 \(expected 200\): oops/);
      assert.match(problems.get('short') ?? '', /short body: 3 bytes, 2 missing/);
      assert.match(problems.get('head-with-body') ?? '', /bytes after a whole answer/);
      assert.match(problems.get('hang') ?? '', /no answer within 1000 ms/);
      assert.equal(report.errors, report.errorExamples.reduce((sum, example) => sum + example.count, 0));
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });
});

describe('load suite, short', () => {
  it('answers every request of a mixed load and of newcomers whole and right, with memory bounded', async () => {
    const result = await runLoad('short', { say: (line) => console.log(line) });
    const { figures } = result;
    console.log(JSON.stringify(figures));
    const count = (key: string): number => Number(figures[key] ?? 0);
    assert.ok(count('mixedRequests') > 1_000, 'the mixed load ran');
    for (const status of ['200', '206', '304']) assert.ok(count(`mixed:status:${status}`) > 0, `answers ${status} came back`);
    assert.ok(count('mixedBodiesVerified') > 100, 'bodies were checked against their digests');
    assert.ok(count('coldFills') >= 6, 'cold blobs were filled during the load');
    assert.ok(count('tokenRequests') >= 6, 'the mirror asked the token server for the new repositories');
    assert.ok(count('newcomersRequests') > 150, 'the newcomers ran');
    assert.equal(count('verifyExit'), 0, 'regmirror verify found the data directory sound');
    const report = result.violations.map((violation) => `- ${describeViolation(violation)}`).join('\n');
    assert.equal(result.violations.length, 0, `${result.violations.length} violations:\n${report}`);
  });
});
