// One HTTP/1.1 exchange over a bare TCP socket: the request goes out byte for byte as given (NUL, bare CR,
// lying Content-Length, bad escapes: what node:http and fetch refuse to send) and the answer is read by hand,
// so a hang, a close without an answer, a short body and a body on a HEAD are each told apart.

import { connect } from 'node:net';

export interface RawAnswer {
  kind: 'answer';
  status: number;
  /** Header names lowercased; a repeated header keeps every value. */
  headers: Map<string, string[]>;
  body: Buffer;
  /** The body arrived whole (by Content-Length, by the chunked terminator, or up to the close). */
  complete: boolean;
  /** Bytes after the answer's framing: another answer, or a body that a HEAD or a 304 should not have. */
  trailing: Buffer;
  /** The server closed the connection (it did, or the deadline came first with a whole answer). */
  closed: boolean;
}

export type RawOutcome =
  | RawAnswer
  /**
   * The connection ended before a whole status line and headers arrived; `whileSending` when our request was
   * not all written yet (a server that answers early and closes without reading the body can lose its answer to
   * the reset: nobody can tell from here whether it sent one).
   */
  | { kind: 'closed'; received: Buffer; error: string | undefined; whileSending: boolean }
  /** Nothing whole arrived before the deadline. */
  | { kind: 'hang'; received: Buffer };

export interface RawExchange {
  port: number;
  bytes: Buffer;
  /** HEAD answers carry no body whatever their headers say. */
  method: string;
  /** End our side after sending (FIN), as a client that declared more body than it sent and gave up. */
  halfClose: boolean;
  deadlineMs: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const CLOSE_GRACE_MS = 300;
const WRITE_PIECE = 64 * 1024;

/** Sends one request on a fresh connection and resolves with what came back; never rejects. */
export function exchange(request: RawExchange): Promise<RawOutcome> {
  return new Promise<RawOutcome>((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    let socketError: string | undefined;
    let grace: NodeJS.Timeout | undefined;
    const socket = connect({ host: '127.0.0.1', port: request.port });
    const finish = (byDeadline: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      socket.destroy();
      const received = Buffer.concat(chunks);
      const answer = parseAnswer(received, request.method, !byDeadline);
      if (answer !== undefined && (answer.complete || !byDeadline)) resolve(answer);
      else if (byDeadline) resolve({ kind: 'hang', received });
      else resolve({ kind: 'closed', received, error: socketError, whileSending: !sent });
    };
    const timer = setTimeout(() => finish(true), request.deadlineMs);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      // Every request says Connection: close, so the close follows a whole answer at once; a server that keeps
      // the connection open anyway costs a short grace (which also catches a body sent after a HEAD's head), not the deadline.
      if (grace === undefined && parseAnswer(Buffer.concat(chunks), request.method, false)?.complete === true) {
        grace = setTimeout(() => finish(true), CLOSE_GRACE_MS);
      }
    });
    // A server that answers early and resets while we still write: what it sent before is still the answer.
    socket.on('error', (error: NodeJS.ErrnoException) => {
      socketError = error.code ?? error.message;
      finish(false);
    });
    socket.on('close', () => finish(false));
    // In pieces, and no more once the answer has begun: a server that answers early stops reading, and bytes
    // still arriving when it closes turn its close into a reset that can take the answer with it.
    let offset = 0;
    let sent = false;
    const writeMore = (): void => {
      while (!settled && chunks.length === 0 && offset < request.bytes.length) {
        const piece = request.bytes.subarray(offset, offset + WRITE_PIECE);
        offset += piece.length;
        if (!socket.write(piece)) {
          socket.once('drain', writeMore);
          return;
        }
      }
      if (offset >= request.bytes.length && !sent) {
        sent = true;
        if (request.halfClose) socket.end();
      }
    };
    socket.on('connect', writeMore);
  });
}

/** The answer in `received`, skipping interim 1xx answers; undefined until a whole head has arrived. */
export function parseAnswer(received: Buffer, method: string, closed: boolean): RawAnswer | undefined {
  let offset = 0;
  for (;;) {
    const headEnd = received.indexOf(HEADER_END, offset);
    if (headEnd === -1) return undefined;
    const lines = received.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const statusMatch = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (statusMatch === null) return undefined;
    const status = Number(statusMatch[1]);
    const headers = new Map<string, string[]>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
    }
    const rest = received.subarray(headEnd + HEADER_END.length);
    if (status >= 100 && status < 200) {
      offset = headEnd + HEADER_END.length;
      continue;
    }
    if (method === 'HEAD' || status === 204 || status === 304) {
      return { kind: 'answer', status, headers, body: Buffer.alloc(0), complete: true, trailing: rest, closed };
    }
    if (headers.get('transfer-encoding')?.some((value) => value.toLowerCase().includes('chunked')) === true) {
      const chunked = dechunk(rest);
      return { kind: 'answer', status, headers, body: chunked.body, complete: chunked.complete, trailing: chunked.trailing, closed };
    }
    const length = headers.get('content-length')?.[0];
    if (length !== undefined && /^\d+$/.test(length)) {
      const size = Number(length);
      return { kind: 'answer', status, headers, body: rest.subarray(0, size), complete: rest.length >= size, trailing: rest.subarray(size), closed };
    }
    return { kind: 'answer', status, headers, body: rest, complete: closed, trailing: Buffer.alloc(0), closed };
  }
}

function dechunk(bytes: Buffer): { body: Buffer; complete: boolean; trailing: Buffer } {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const lineEnd = bytes.indexOf('\r\n', offset);
    if (lineEnd === -1) break;
    const size = Number.parseInt(bytes.subarray(offset, lineEnd).toString('latin1').split(';')[0] ?? '', 16);
    if (!Number.isFinite(size) || size < 0) break;
    const start = lineEnd + 2;
    if (size === 0) {
      // The last chunk, then optional trailer fields, then an empty line.
      const end = bytes.indexOf(HEADER_END, lineEnd);
      const close = bytes.subarray(lineEnd, lineEnd + 4).equals(HEADER_END) ? lineEnd + 4 : end === -1 ? -1 : end + 4;
      if (close === -1) break;
      return { body: Buffer.concat(parts), complete: true, trailing: bytes.subarray(close) };
    }
    if (bytes.length < start + size + 2) break;
    parts.push(bytes.subarray(start, start + size));
    offset = start + size + 2;
  }
  return { body: Buffer.concat(parts), complete: false, trailing: Buffer.alloc(0) };
}
