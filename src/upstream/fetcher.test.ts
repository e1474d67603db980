import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Metrics } from '../telemetry/metrics.js';
import { UpstreamFetcher } from './fetcher.js';

describe('UpstreamFetcher', () => {
  let server: Server;
  let fetcher: UpstreamFetcher;

  before(async () => {
    // A small answer that arrives whole at once; the test then lets go of it unread.
    server = createServer((_request, response) => {
      response.writeHead(200, { 'content-length': '1024' });
      response.end(Buffer.alloc(1024));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    fetcher = new UpstreamFetcher({
      label: 'test',
      url: `http://127.0.0.1:${port}`,
      timeouts: { connectMs: 5_000, responseHeadersMs: 5_000, bodyIdleMs: 5_000, documentMs: 5_000 },
      trustedHosts: [],
      metrics: new Metrics(),
    });
  });

  after(async () => {
    await fetcher.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('lets code drop a body it will not use, even one that has arrived whole, without an error nobody listens for (found by the faults suite)', async () => {
    const response = await fetcher.send({ method: 'GET', path: '/v2/team/app/blobs/x', kind: 'blob' });
    assert.equal(response.status, 200);
    // The whole answer has arrived, unread: undici has finished with the request and listens for nothing more.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closed = new Promise((resolve) => response.body.once('close', resolve));
    // Before the fix this emitted a RequestAbortedError nobody listened for: the process (here, this test) died.
    response.body.destroy();
    await closed;
    assert.equal(response.body.destroyed, true);
  });
});
