// A port that cannot be used stops the start with the reason: with the default listen address (every
// interface) a port taken on IPv6 is not quietly bound on IPv4 alone (only a host without IPv6 is).

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, describe, it } from 'node:test';
import { runRegmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

describe('listen failures', { timeout: 60_000 }, () => {
  const directories: string[] = [];
  after(async () => {
    for (const directory of directories) await removeDir(directory);
  });

  async function refusedServe(listen: string): Promise<{ code: number; stderr: string; stdout: string }> {
    const dataDir = await makeTempDir('listen-failure-');
    directories.push(dataDir);
    // A server that starts anyway is killed after 20 s, and the test fails.
    return runRegmirror(['serve', '--listen', listen, '--data', dataDir], { timeoutMs: 20_000 });
  }

  it('a port taken on ::1 stops a server meant for every interface, instead of binding IPv4 alone', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen({ port: 0, host: '::1', ipv6Only: true }, resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const serve = await refusedServe(`:${port}`);
      assert.equal(serve.code, 1);
      assert.match(serve.stderr, new RegExp(`^regmirror: cannot listen on :${port} \\(every interface\\): .*EADDRINUSE`));
      assert.doesNotMatch(serve.stdout, /regmirror listening/);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('a port taken on the configured address stops the start, saying which', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen({ port: 0, host: '127.0.0.1' }, resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const serve = await refusedServe(`127.0.0.1:${port}`);
      assert.equal(serve.code, 1);
      assert.match(serve.stderr, new RegExp(`^regmirror: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
