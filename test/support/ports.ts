// Loopback ports for test servers: pick a free one (retrying a start whose port another process took
// meanwhile), and wait until an HTTP server answers on one. Everything binds and connects to 127.0.0.1 only.
import { createServer } from 'node:net';
import { request, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions as HttpsRequestOptions } from 'node:https';

/** What a client needs to reach a server over TLS: the CA it trusts, and its own certificate for mutual TLS. */
export type ClientTls = Pick<HttpsRequestOptions, 'ca' | 'cert' | 'key'>;

/** A port that was free on 127.0.0.1 a moment ago (listen on :0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: listening socket has no port'));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}

/** Whether a start failed because its port was taken (the server's own words are in the error's message). */
export function isPortConflict(error: unknown): boolean {
  return error instanceof Error && /address already in use|EADDRINUSE/i.test(`${error.message} ${String((error as NodeJS.ErrnoException).code)}`);
}

/**
 * Runs start on a port from pick (default freePort), and again on a new port while start fails because
 * its port was taken: freePort's port is free only until it is bound, and another process may take it in
 * between. For servers that must be told their port (distribution, nginx); where a server can bind :0 and
 * say which port it got, let it instead.
 */
export async function startOnFreePort<T>(start: (port: number) => Promise<T>, options: { attempts?: number; pick?: () => Promise<number> } = {}): Promise<T> {
  const attempts = options.attempts ?? 5;
  const pick = options.pick ?? freePort;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start(await pick());
    } catch (error) {
      if (attempt >= attempts || !isPortConflict(error)) throw error;
    }
  }
}

/** One GET (https when the URL says so); resolves with the status and body, rejects on connection errors or after timeoutMs. */
export function getText(url: string, options: { timeoutMs?: number; tls?: ClientTls } = {}): Promise<{ status: number; body: string }> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const requestOptions = { method: 'GET', agent: false, timeout: timeoutMs, ...options.tls } as const;
    const respond = (res: IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    const req = url.startsWith('https:') ? httpsRequest(url, requestOptions, respond) : request(url, requestOptions, respond);
    req.once('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Polls url (every intervalMs, default 100) until any HTTP response with status < 500 arrives. Rejects after
 * timeoutMs with the last error, or as soon as signal aborts (e.g. because the server process died).
 */
export async function waitForHttp(url: string, timeoutMs = 15_000, opts: { signal?: AbortSignal; intervalMs?: number; tls?: ClientTls } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastProblem = 'no attempt made';
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`waitForHttp ${url}: aborted (${String(opts.signal.reason)}); last: ${lastProblem}`);
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error(`waitForHttp ${url}: nothing answered below 500 within ${timeoutMs} ms; last: ${lastProblem}`);
    try {
      const { status } = await getText(url, { timeoutMs: Math.min(remaining, 2_000), tls: opts.tls });
      if (status < 500) return;
      lastProblem = `HTTP ${status}`;
    } catch (err) {
      lastProblem = err instanceof Error ? err.message : String(err);
    }
    await sleep(Math.min(opts.intervalMs ?? 100, Math.max(0, deadline - Date.now())), opts.signal);
  }
}
