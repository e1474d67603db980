// Tests for accept fairness: with copies of the listening socket a blocked event loop takes many queued connections
// in its next turn (without them: one), for http and https servers alike, and the turn budget starts request work in
// FIFO slices of about its budget.

import assert from 'node:assert/strict';
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { connect as connectTls } from 'node:tls';
import { makeTestCa } from '../../test/support/certificates.js';
import { readTlsFiles } from '../config/tls-files.js';
import { addAcceptCopies, createTurnBudget } from './accept-fairness.js';
import { httpsServerOptions } from './tls.js';

async function listening(create: (handler: RequestListener) => Server = createServer): Promise<{ server: Server; port: number }> {
  const server = create((_request, response) => response.end('ok'));
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // Holds the event loop, as a saturated server does: connections queue in the kernel meanwhile.
  }
}

/** Connects `count` clients while the event loop is held, then counts the connections accepted in the next turn. */
async function acceptedInOneTurn(server: Server, port: number, count: number): Promise<{ firstTurn: number; sockets: Socket[] }> {
  let accepted = 0;
  server.on('connection', () => (accepted += 1));
  const sockets = Array.from({ length: count }, () => connect({ host: '127.0.0.1', port }).on('error', () => undefined));
  // The kernel completes the handshakes on its own while the loop is held.
  busyFor(300);
  // From the check phase of this turn to that of the next: one poll phase, where accepts happen.
  const before = await new Promise<number>((resolve) => setImmediate(() => resolve(accepted)));
  const after = await new Promise<number>((resolve) => setImmediate(() => resolve(accepted)));
  return { firstTurn: after - before, sockets };
}

describe('addAcceptCopies', () => {
  it('takes many queued connections in one turn, where one descriptor takes one; closes with the server', async () => {
    const plain = await listening();
    const alone = await acceptedInOneTurn(plain.server, plain.port, 40);
    for (const socket of alone.sockets) socket.destroy();
    plain.server.close();
    assert.ok(alone.firstTurn <= 2, `one descriptor accepted ${alone.firstTurn} in its first turn`);

    const fair = await listening();
    const warnings: Error[] = [];
    const copies = addAcceptCopies(fair.server, { copies: 16, backlog: 4096 }, (error) => warnings.push(error));
    assert.equal(await copies.ready, 16);
    const many = await acceptedInOneTurn(fair.server, fair.port, 40);
    assert.ok(many.firstTurn >= 16, `17 descriptors accepted ${many.firstTurn} in their first turn`);
    // The connections a copy accepted are the server's: they are answered.
    const answered = await new Promise<string>((resolve, reject) => {
      const socket = many.sockets[0];
      if (socket === undefined) return reject(new Error('no socket'));
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.once('end', () => resolve(text));
      socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    });
    assert.match(answered, /^HTTP\/1\.1 200 OK/);
    for (const socket of many.sockets) socket.destroy();
    copies.close();
    await new Promise<void>((resolve) => fair.server.close(() => resolve()));
    const refused = await new Promise<boolean>((resolve) => {
      connect({ host: '127.0.0.1', port: fair.port })
        .once('error', () => resolve(true))
        .once('connect', () => resolve(false));
    });
    assert.equal(refused, true, 'no descriptor of the socket is left listening');
    assert.deepEqual(warnings, []);
  });
  it('hands the connections a copy accepted to an https server, which does their TLS handshakes', async (t) => {
    const ca = await makeTestCa();
    t.after(() => ca.destroy());
    const issued = await ca.issueServer('server');
    const tls = httpsServerOptions(readTlsFiles({ certificate: issued.certificateFile, key: issued.keyFile, clientCA: undefined }), 10_000);
    const fair = await listening((handler) => createHttpsServer(tls, handler));
    const copies = addAcceptCopies(fair.server, { copies: 16, backlog: 4096 }, (error) => assert.fail(error));
    assert.equal(await copies.ready, 16);
    const many = await acceptedInOneTurn(fair.server, fair.port, 40);
    assert.ok(many.firstTurn >= 16, `17 descriptors accepted ${many.firstTurn} in their first turn`);
    // Every connection, whichever descriptor took it, completes its handshake against the CA and is answered.
    const answers = await Promise.all(
      many.sockets.map(
        (socket) =>
          new Promise<string>((resolve, reject) => {
            const secure = connectTls({ socket, ca: ca.ca, servername: 'localhost' }, () => {
              secure.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
            });
            let text = '';
            secure.on('data', (chunk: Buffer) => (text += chunk.toString()));
            secure.once('end', () => resolve(text));
            secure.once('error', reject);
          }),
      ),
    );
    assert.equal(answers.filter((answer) => /^HTTP\/1\.1 200 OK/.test(answer)).length, 40);
    copies.close();
    await new Promise<void>((resolve) => fair.server.close(() => resolve()));
  });
});

describe('createTurnBudget', () => {
  it('starts work at once within the budget, queues the rest in order, and drains it turn by turn', async () => {
    let clock = 0;
    const budget = createTurnBudget(1, () => clock);
    const started: number[] = [];
    for (let index = 0; index < 10; index++) {
      budget.admit(() => {
        started.push(index);
        clock += 0.4;
      });
    }
    // Each piece of work takes 0.4 ms of the 1 ms budget: three start in this turn (at 0, 0.4 and 0.8 ms).
    assert.deepEqual(started, [0, 1, 2], 'within this turn: work until the budget is spent');
    // Each later turn takes about the budget's worth, at least one.
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(started.length > 3 && started.length < 10, `the next turn started a budget's worth more: ${started.length} in all`);
    for (let turn = 0; turn < 10 && started.length < 10; turn++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(started, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'all of it, first in first out');
    assert.ok(budget.stats().deferred >= 1);
  });
});
