// A hostile upstream whose every answer the test writes: a real node:http server on 127.0.0.1 that records each
// request and hands it to the test's handler (redirects into the network, chunks dripped for ever, smuggled bytes,
// lying headers). For what a real registry cannot do on demand; the rest of the suite uses distribution.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { serveOnLoopback } from './fault-upstream.js';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
}

export type ScriptedHandler = (request: IncomingMessage, response: ServerResponse) => void | Promise<void>;

export interface ScriptedUpstream {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Requests whose method matches and whose path matches re. */
  count(method: string, path: RegExp): number;
  /** Replaces the handler for the requests to come. */
  handle(handler: ScriptedHandler): void;
  stop(): Promise<void>;
}

export async function startScriptedUpstream(handler: ScriptedHandler): Promise<ScriptedUpstream> {
  let current = handler;
  const requests: RecordedRequest[] = [];
  const server = createServer((request, response) => {
    requests.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers });
    Promise.resolve(current(request, response)).catch(() => response.destroy());
  });
  const listening = await serveOnLoopback(server);
  return {
    url: `http://127.0.0.1:${listening.port}`,
    port: listening.port,
    requests,
    count: (method, path) => requests.filter((request) => request.method === method && path.test(request.path)).length,
    handle: (next) => {
      current = next;
    },
    stop: () => listening.stop(),
  };
}

/** Sends an OCI error body with a status. */
export function sendError(response: ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ errors: [{ code, message: code.toLowerCase() }] });
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers });
  response.end(body);
}
