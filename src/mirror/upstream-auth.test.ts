// Tests for WWW-Authenticate parsing and UpstreamAuth: the token flow against a fake token service,
// with an injected clock.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChallenge, RealmRefusedError, TokenError, UpstreamAuth, type Challenge, type TokenAnswer } from './upstream-auth.js';

const HUB_CHALLENGE = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"';
const ALPINE = 'repository:library/alpine:pull';
const HUB = new URL('https://registry-1.docker.io');
const BUSYBOX = 'repository:library/busybox:pull';

describe('parseChallenge', () => {
  const cases: { name: string; header: string | undefined; expected: Challenge | undefined }[] = [
    {
      name: "Docker Hub's Bearer challenge",
      header: HUB_CHALLENGE,
      expected: { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: ALPINE } },
    },
    { name: 'Basic', header: 'Basic realm="Registry Realm"', expected: { scheme: 'basic', params: { realm: 'Registry Realm' } } },
    { name: 'Basic without parameters', header: 'Basic', expected: { scheme: 'basic', params: {} } },
    {
      name: 'unquoted values',
      header: 'Bearer realm=https://auth.example/token,service=registry.example',
      expected: { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example' } },
    },
    {
      name: 'escaped quotes and backslashes',
      header: 'Bearer realm="https://a.example/t",service="say \\"hi\\"",scope="a\\\\b"',
      expected: { scheme: 'bearer', params: { realm: 'https://a.example/t', service: 'say "hi"', scope: 'a\\b' } },
    },
    {
      name: 'a comma inside a quoted scope',
      header: 'Bearer realm="r",scope="repository:a/b:pull,push"',
      expected: { scheme: 'bearer', params: { realm: 'r', scope: 'repository:a/b:pull,push' } },
    },
    {
      name: 'spaces around = and commas, names in any case',
      header: '  BEARER Realm = "r" ,  SERVICE="s",error="insufficient_scope"',
      expected: { scheme: 'bearer', params: { realm: 'r', service: 's', error: 'insufficient_scope' } },
    },
    { name: 'an empty value', header: 'Bearer realm=""', expected: { scheme: 'bearer', params: { realm: '' } } },
    { name: 'no header', header: undefined, expected: undefined },
    { name: 'an empty header', header: '', expected: undefined },
    { name: 'an unknown scheme', header: 'Negotiate abc', expected: undefined },
    { name: 'Digest', header: 'Digest realm="r", nonce="n"', expected: undefined },
    { name: 'punctuation', header: '!!!', expected: undefined },
    { name: 'a scheme glued to its parameters', header: 'Bearerrealm="r"', expected: undefined },
  ];
  for (const { name, header, expected } of cases) {
    it(name, () => {
      assert.deepEqual(parseChallenge(header), expected);
    });
  }
});

interface TokenCall {
  url: URL;
  headers: Record<string, string>;
}

/** A fake token service: answers each request with the next queued answer, recording what it was asked. */
class FakeTokenService {
  readonly calls: TokenCall[] = [];
  private issued = 0;
  /** When set, requests wait for release() before answering. */
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  status = 200;
  body: (call: TokenCall, issued: number) => unknown = (call, issued) => ({
    token: `token-${issued}-${call.url.searchParams.get('scope') ?? ''}`,
    expires_in: 300,
  });

  hold(): void {
    this.gate = new Promise<void>((resolve) => {
      this.open = resolve;
    });
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  readonly fetch = async (url: URL, headers: Record<string, string>): Promise<TokenAnswer> => {
    const call = { url, headers };
    this.calls.push(call);
    if (this.gate !== undefined) await this.gate;
    this.issued += 1;
    const document = this.body(call, this.issued);
    // The client reads the body of a success only (within its size cap); other answers come back empty.
    if (this.status !== 200) return { status: this.status, body: Buffer.alloc(0) };
    return { status: this.status, body: Buffer.from(typeof document === 'string' ? document : JSON.stringify(document)) };
  };
}

class Clock {
  time = 1_700_000_000_000;
  readonly now = (): number => this.time;
}

/** An UpstreamAuth that has already met Docker Hub's challenge. */
function hubAuth(
  service: FakeTokenService,
  clock = new Clock(),
  credentials?: { username: string; password: string },
): UpstreamAuth {
  const auth = new UpstreamAuth(credentials, HUB, service.fetch, clock.now);
  assert.equal(auth.acceptChallenge(HUB_CHALLENGE, ALPINE, undefined), true);
  return auth;
}

describe('UpstreamAuth', () => {
  it('sends nothing before the upstream has asked', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth(undefined, HUB, service.fetch);
    assert.equal(await auth.authorization(ALPINE), undefined);
    assert.equal(service.calls.length, 0);
  });

  it('fetches an anonymous token from the realm with service and scope', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    assert.equal(await auth.authorization(ALPINE), `Bearer token-1-${ALPINE}`);
    assert.equal(service.calls.length, 1);
    const [call] = service.calls;
    assert.ok(call);
    assert.equal(call.url.origin + call.url.pathname, 'https://auth.docker.io/token');
    assert.equal(call.url.searchParams.get('service'), 'registry.docker.io');
    assert.equal(call.url.searchParams.get('scope'), ALPINE);
    assert.equal(call.headers.authorization, undefined);
    assert.equal(call.headers.accept, 'application/json');
  });

  it('asks for the scope of the request, not the one in the challenge', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    await auth.authorization(BUSYBOX);
    assert.equal(service.calls[0]?.url.searchParams.get('scope'), BUSYBOX);
  });

  it('sends Basic credentials to the token realm', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service, new Clock(), { username: 'bob', password: 'p:ss' });
    await auth.authorization(ALPINE);
    assert.equal(service.calls[0]?.headers.authorization, `Basic ${Buffer.from('bob:p:ss').toString('base64')}`);
  });

  it('sends credentials to a plain-http realm only from a plain-http upstream on the same host', async () => {
    const credentials = { username: 'bob', password: 'secret' };
    const challengeAt = (realm: string): string => `Bearer realm="${realm}",service="registry"`;
    const attempt = (upstream: string, realm: string, withCredentials = true): { service: FakeTokenService; result: Promise<string | undefined> } => {
      const service = new FakeTokenService();
      const auth = new UpstreamAuth(withCredentials ? credentials : undefined, new URL(upstream), service.fetch);
      // A refused realm throws from acceptChallenge; a good one is asked for a token.
      const result = (async () => {
        assert.equal(auth.acceptChallenge(challengeAt(realm), ALPINE, undefined), true);
        return auth.authorization(ALPINE);
      })();
      result.catch(() => undefined);
      return { service, result };
    };
    const basic = `Basic ${Buffer.from('bob:secret').toString('base64')}`;

    const sideBySide = attempt('http://registry.internal:5000', 'http://registry.internal:5001/token');
    await sideBySide.result;
    assert.equal(sideBySide.service.calls[0]?.headers.authorization, basic);

    const httpsRealm = attempt('http://registry.internal:5000', 'https://auth.example/token');
    await httpsRealm.result;
    assert.equal(httpsRealm.service.calls[0]?.headers.authorization, basic);

    for (const [upstream, realm] of [
      ['http://registry.internal:5000', 'http://collector.example/token'],
      ['https://registry.internal', 'http://registry.internal/token'],
    ] as const) {
      const refused = attempt(upstream, realm);
      await assert.rejects(refused.result, (error: unknown) => error instanceof RealmRefusedError && /plain-http/.test(error.message), `${upstream} → ${realm}`);
      assert.equal(refused.service.calls.length, 0, `nothing was sent to ${realm}`);
    }

    // Without credentials there is nothing to leak: an anonymous token from anywhere is fine.
    const anonymous = attempt('https://registry.internal', 'http://collector.example/token', false);
    assert.equal(await anonymous.result, `Bearer token-1-${ALPINE}`);
    assert.equal(anonymous.service.calls[0]?.headers.authorization, undefined);
  });

  it('refuses a realm that is not an http(s) URL, and does not keep it', async () => {
    for (const realm of ['file:///etc/passwd', 'not a url', 'gopher://auth.example/']) {
      const service = new FakeTokenService();
      const auth = new UpstreamAuth(undefined, HUB, service.fetch);
      assert.throws(() => auth.acceptChallenge(`Bearer realm="${realm}"`, ALPINE, undefined), RealmRefusedError, realm);
      // Not learned: the next request goes without, and meets the upstream's challenge afresh.
      assert.equal(await auth.authorization(ALPINE), undefined);
      assert.equal(service.calls.length, 0);
    }
  });

  it('does not keep a challenge whose realm failed: a later good challenge replaces it', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth(undefined, HUB, service.fetch);
    assert.equal(auth.acceptChallenge('Bearer realm="https://broken.example/token"', ALPINE, undefined), true);
    service.status = 502;
    await assert.rejects(auth.authorization(ALPINE), TokenError);
    assert.equal(await auth.authorization(BUSYBOX), undefined, 'the failed realm is forgotten for every repository');
    service.status = 200;
    assert.equal(auth.acceptChallenge(HUB_CHALLENGE, BUSYBOX, undefined), true);
    assert.match((await auth.authorization(BUSYBOX)) ?? '', /^Bearer token-/);
  });

  it('throws TokenError 502 for a token answer that is not a JSON object', async () => {
    for (const body of ['not json', '"a string"', 'null', '[1]']) {
      const service = new FakeTokenService();
      service.body = () => body;
      const auth = hubAuth(service);
      await assert.rejects(auth.authorization(ALPINE), (error: unknown) => error instanceof TokenError && error.status === 502, body);
    }
  });

  it('caches a token per scope until shortly before it expires', async () => {
    const service = new FakeTokenService();
    const clock = new Clock();
    const auth = hubAuth(service, clock);
    const start = clock.time;
    const first = await auth.authorization(ALPINE);
    clock.time = start + 294_999; // expires_in 300 s, used until 5 s before
    assert.equal(await auth.authorization(ALPINE), first);
    assert.equal(service.calls.length, 1);
    clock.time = start + 295_000;
    const second = await auth.authorization(ALPINE);
    assert.notEqual(second, first);
    assert.equal(service.calls.length, 2);
    clock.time = start + 400_000;
    assert.equal(await auth.authorization(ALPINE), second);
    assert.equal(service.calls.length, 2);
  });

  it('assumes 60 s when the token service names no lifetime, and reads access_token', async () => {
    const service = new FakeTokenService();
    service.body = (_call, issued) => ({ access_token: `access-${issued}` });
    const clock = new Clock();
    const auth = hubAuth(service, clock);
    const start = clock.time;
    assert.equal(await auth.authorization(ALPINE), 'Bearer access-1');
    clock.time = start + 54_999;
    assert.equal(await auth.authorization(ALPINE), 'Bearer access-1');
    clock.time = start + 55_000;
    assert.equal(await auth.authorization(ALPINE), 'Bearer access-2');
  });

  it('keeps most of the life of a short-lived token', async () => {
    const service = new FakeTokenService();
    service.body = (_call, issued) => ({ token: `short-${issued}`, expires_in: 4 });
    const clock = new Clock();
    const auth = hubAuth(service, clock);
    const start = clock.time;
    assert.equal(await auth.authorization(ALPINE), 'Bearer short-1');
    clock.time = start + 2_999; // 4 s, less a quarter
    assert.equal(await auth.authorization(ALPINE), 'Bearer short-1');
    clock.time = start + 3_000;
    assert.equal(await auth.authorization(ALPINE), 'Bearer short-2');
  });

  it('makes one token request for concurrent calls in one scope', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    service.hold();
    const pending = Array.from({ length: 5 }, () => auth.authorization(ALPINE));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(service.calls.length, 1);
    service.release();
    const answers = await Promise.all(pending);
    assert.equal(new Set(answers).size, 1);
    assert.equal(answers[0], `Bearer token-1-${ALPINE}`);
    assert.equal(service.calls.length, 1);
  });

  it('gets different tokens for different scopes', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    const [alpine, busybox] = await Promise.all([auth.authorization(ALPINE), auth.authorization(BUSYBOX)]);
    assert.notEqual(alpine, busybox);
    assert.equal(service.calls.length, 2);
    assert.deepEqual(service.calls.map((call) => call.url.searchParams.get('scope')).sort(), [ALPINE, BUSYBOX].sort());
    assert.equal(await auth.authorization(ALPINE), alpine);
    assert.equal(await auth.authorization(BUSYBOX), busybox);
    assert.equal(service.calls.length, 2);
  });

  it('retries a refused token once with a fresh one', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    const refused = await auth.authorization(ALPINE);
    const retry = auth.acceptChallenge(`${HUB_CHALLENGE},error="invalid_token"`, ALPINE, refused);
    assert.equal(retry, true);
    const fresh = await auth.authorization(ALPINE);
    assert.notEqual(fresh, refused);
    assert.equal(service.calls.length, 2);
  });

  it('does not retry a token refused for insufficient scope', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    const refused = await auth.authorization(ALPINE);
    assert.equal(auth.acceptChallenge(`${HUB_CHALLENGE},error="insufficient_scope"`, ALPINE, refused), false);
  });

  it('answers a first challenge after an anonymous request with a retry', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth(undefined, HUB, service.fetch);
    assert.equal(auth.acceptChallenge(HUB_CHALLENGE, ALPINE, undefined), true);
    assert.equal(await auth.authorization(ALPINE), `Bearer token-1-${ALPINE}`);
  });

  it('follows a realm that changes', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    await auth.authorization(ALPINE);
    assert.equal(auth.acceptChallenge('Bearer realm="https://other.example/token",service="s"', ALPINE, undefined), true);
    await auth.authorization(ALPINE);
    assert.equal(service.calls.length, 2);
    assert.equal(service.calls[1]?.url.origin, 'https://other.example');
  });

  it('refuses to retry a Bearer challenge without a realm, or no challenge at all', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth(undefined, HUB, service.fetch);
    assert.equal(auth.acceptChallenge('Bearer service="s"', ALPINE, undefined), false);
    assert.equal(auth.acceptChallenge(undefined, ALPINE, undefined), false);
    assert.equal(auth.acceptChallenge('Negotiate', ALPINE, undefined), false);
    assert.equal(await auth.authorization(ALPINE), undefined);
  });

  it('uses Basic credentials directly when the upstream asks for Basic', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth({ username: 'alice', password: 'pw' }, HUB, service.fetch);
    assert.equal(auth.acceptChallenge('Basic realm="r"', ALPINE, undefined), true);
    const basic = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    assert.equal(await auth.authorization(ALPINE), basic);
    // The same credentials refused: no point retrying.
    assert.equal(auth.acceptChallenge('Basic realm="r"', ALPINE, basic), false);
    assert.equal(service.calls.length, 0);
  });

  it('cannot answer Basic without credentials', async () => {
    const service = new FakeTokenService();
    const auth = new UpstreamAuth(undefined, HUB, service.fetch);
    assert.equal(auth.acceptChallenge('Basic realm="r"', ALPINE, undefined), false);
    assert.equal(await auth.authorization(ALPINE), undefined);
  });

  it('throws TokenError with the status when the token service refuses, and tries again at the next challenge', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service, new Clock(), { username: 'bob', password: 'wrong' });
    service.status = 401;
    await assert.rejects(auth.authorization(ALPINE), (error: unknown) => {
      assert.ok(error instanceof TokenError);
      assert.equal(error.status, 401);
      return true;
    });
    service.status = 200;
    assert.equal(auth.acceptChallenge(HUB_CHALLENGE, ALPINE, undefined), true);
    assert.match((await auth.authorization(ALPINE)) ?? '', /^Bearer token-/);
    assert.equal(service.calls.length, 2);
  });

  it('rejects every waiter of a failed token request', async () => {
    const service = new FakeTokenService();
    const auth = hubAuth(service);
    service.status = 503;
    service.hold();
    const pending = [auth.authorization(ALPINE), auth.authorization(ALPINE)];
    service.release();
    const results = await Promise.allSettled(pending);
    assert.deepEqual(
      results.map((result) => result.status),
      ['rejected', 'rejected'],
    );
    assert.equal(service.calls.length, 1);
  });

  it('throws TokenError 502 when the token service sends no token', async () => {
    for (const body of [{}, { token: '' }, { token: 42 }]) {
      const service = new FakeTokenService();
      service.body = () => body;
      const auth = hubAuth(service);
      await assert.rejects(auth.authorization(ALPINE), (error: unknown) => error instanceof TokenError && error.status === 502);
    }
  });
});
