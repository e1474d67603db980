// Tests for `regmirror prefetch` without a mirror: what it refuses before any request, and how it words an answer
// that is not 200. Pulls through a real mirror are in test/prefetch-cli.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeAnswer, parseBearerChallenge, readUsage, runPrefetch, type PrefetchOutput } from './prefetch.js';

const SERVER = 'http://127.0.0.1:5000';

describe('readUsage', () => {
  it('reads references, platforms and the server', () => {
    const usage = readUsage(['docker.io/library/alpine:3.20', `ghcr.io/org/app@sha256:${'b'.repeat(64)}`, 'team/app'], {
      server: 'http://mirror.internal:5000/',
      platform: ['linux/amd64', 'linux/arm64/v8'],
    });
    assert.ok(usage.ok);
    assert.equal(usage.origin, 'http://mirror.internal:5000');
    assert.deepEqual(
      usage.platforms.map((platform) => [platform.os, platform.architecture, platform.variant]),
      [
        ['linux', 'amd64', undefined],
        ['linux', 'arm64', 'v8'],
      ],
    );
    assert.deepEqual(
      usage.images.map((image) => [image.text, image.reference.name, image.reference.tag, image.reference.digest]),
      [
        ['docker.io/library/alpine:3.20', 'docker.io/library/alpine', '3.20', undefined],
        [`ghcr.io/org/app@sha256:${'b'.repeat(64)}`, 'ghcr.io/org/app', undefined, `sha256:${'b'.repeat(64)}`],
        ['team/app', 'team/app', 'latest', undefined],
      ],
    );
  });

  it('names every problem at once: each malformed reference, platform and server', () => {
    const usage = readUsage(['team/app:v1', 'Team/App:v1', 'team/app@sha256:123'], { server: 'http://127.0.0.1:5000/registry', platform: ['linux', 'linux/arm64'] });
    assert.equal(usage.ok, false);
    if (usage.ok) return;
    assert.equal(usage.problems.length, 4);
    assert.match(usage.problems[0] ?? '', /^--server http:\/\/127\.0\.0\.1:5000\/registry: .*without a path/);
    assert.match(usage.problems[1] ?? '', /^--platform linux: a platform is OS\/ARCH/);
    assert.match(usage.problems[2] ?? '', /^"Team\/App:v1": malformed reference: invalid repository name/);
    assert.match(usage.problems[3] ?? '', /^"team\/app@sha256:123": malformed reference: invalid digest/);
  });

  const servers: [string, RegExp][] = [
    ['127.0.0.1:5000', /not a URL|http:\/\/ or https:\/\//],
    ['ftp://127.0.0.1:5000', /http:\/\/ or https:\/\//],
    ['http://user:secret@127.0.0.1:5000', /credentials/],
    ['http://127.0.0.1:5000/?ns=docker.io', /without a path/],
    ['not a url', /not a URL/],
  ];
  for (const [server, reason] of servers) {
    it(`refuses --server ${server}`, () => {
      const usage = readUsage(['team/app:v1'], { server });
      assert.equal(usage.ok, false);
      if (!usage.ok) assert.match(usage.problems.join('\n'), reason);
    });
  }

  it('needs at least one reference', () => {
    const usage = readUsage([], { server: SERVER });
    assert.equal(usage.ok, false);
    if (!usage.ok) assert.deepEqual(usage.problems, ['no image to prefetch']);
  });
});

describe('runPrefetch', () => {
  it('exits 2 on bad usage, saying why on stderr', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const output: PrefetchOutput = { out: (line) => out.push(line), err: (line) => err.push(line), terminal: undefined };
    // Port 9 (discard) on loopback: nothing is asked of it, as the usage is refused first.
    assert.equal(await runPrefetch(['team/app:v1', 'team/app:'], { server: 'http://127.0.0.1:9' }, output), 2);
    assert.deepEqual(out, []);
    assert.deepEqual(err, ['regmirror prefetch: "team/app:": malformed reference: invalid tag']);
  });
});

describe('describeAnswer', () => {
  const body = (document: unknown): Buffer => Buffer.from(JSON.stringify(document));

  it('gives the status and the OCI error codes and messages', () => {
    assert.equal(
      describeAnswer(404, body({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail: { tag: 'nope' } }] })),
      'HTTP 404 Not Found: MANIFEST_UNKNOWN manifest unknown',
    );
    assert.equal(
      describeAnswer(502, body({ errors: [{ code: 'UPSTREAM_UNAVAILABLE', message: 'upstream registry unavailable' }, { code: 'X' }] })),
      'HTTP 502 Bad Gateway: UPSTREAM_UNAVAILABLE upstream registry unavailable; X',
    );
  });

  it('gives the status alone when the body is not an OCI error', () => {
    assert.equal(describeAnswer(500, undefined), 'HTTP 500 Internal Server Error');
    assert.equal(describeAnswer(500, Buffer.from('<html>oops</html>')), 'HTTP 500 Internal Server Error');
    assert.equal(describeAnswer(503, body({ error: 'v1 shape' })), 'HTTP 503 Service Unavailable');
    assert.equal(describeAnswer(599, body({ errors: 'no' })), 'HTTP 599');
    assert.equal(describeAnswer(404, body({ errors: [null, 7, {}] })), 'HTTP 404 Not Found');
  });

  it('says a redirect was not followed', () => {
    assert.equal(describeAnswer(307, undefined), 'HTTP 307 Temporary Redirect (a redirect: prefetch follows none)');
  });

  it('keeps control characters and screenfuls of the mirror out of the terminal', () => {
    const said = describeAnswer(400, body({ errors: [{ code: 'DENIED', message: `\u001b[2Jgone\r\n${'x'.repeat(500)}` }, { code: 'A' }, { code: 'B' }, { code: 'C' }] }));
    assert.doesNotMatch(said, /\p{Cc}/u);
    assert.ok(said.startsWith('HTTP 400 Bad Request: DENIED  [2Jgone  xxx'));
    assert.ok(said.endsWith('x; A; B'), 'at most three errors, each cut at 200 characters');
  });
});

describe('parseBearerChallenge', () => {
  it('reads realm, service and scope of a Bearer challenge', () => {
    assert.deepEqual(parseBearerChallenge('Bearer realm="https://m.example/auth/token",service="regmirror",scope="repository:team/app:pull"'), {
      realm: 'https://m.example/auth/token',
      service: 'regmirror',
      scope: 'repository:team/app:pull',
    });
  });

  it('ignores Basic challenges, a missing or non-http realm', () => {
    assert.equal(parseBearerChallenge('Basic realm="regmirror"'), undefined);
    assert.equal(parseBearerChallenge('Bearer service="x"'), undefined);
    assert.equal(parseBearerChallenge('Bearer realm="file:///etc/passwd"'), undefined);
    assert.equal(parseBearerChallenge(undefined), undefined);
  });
});
