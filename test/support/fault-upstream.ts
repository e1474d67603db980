// A fake upstream registry that misbehaves on request: a real node:http server on 127.0.0.1 serving
// `/v2/`, one OCI manifest (by tag and by digest) and its blobs, each answer shaped by a switchable fault mode.
//
// API:
//   const upstream = await startFaultUpstream({ blobs: [bytesA, bytesB], repository: 'faults/app', tags: ['v1'] });
//   upstream.url                     http://127.0.0.1:PORT (give it to regmirror as --upstream)
//   upstream.blobDigests             digests of the given blobs, in order (the manifest's layers)
//   upstream.manifest                { digest, bytes, mediaType } of the served OCI manifest (config + layers)
//   upstream.config, configDigest    the config blob the manifest names (served like the layers)
//   upstream.setMode(mode)           the default mode for every manifest and blob answer
//   upstream.setMode(mode, key)      the mode for one object; key = a blob or manifest digest, or a tag
//                                    (a tag's mode covers GET/HEAD /manifests/<tag>, not /manifests/<digest>)
//   upstream.setMode(mode, key, detail)  the same, with where the fault strikes (FaultDetail: the offset of a
//                                    cut, reset, flipped byte or hold; the Retry-After of a 429; a drip's pace);
//                                    key undefined sets the default mode with its detail
//   upstream.clearModes()            drops every per-object mode; the default mode becomes 'ok'
//   upstream.count(method, /re/)     requests received so far whose method matches and whose path matches re
//   upstream.requests()              every request so far: method, path and arrival time (ms since epoch)
//   upstream.heldCount()             'held' responses waiting for release()
//   upstream.release(ending)         ends every 'held' response: 'rest' sends the rest, 'cut' destroys the
//                                    socket, 'wrong-rest' sends the rest with its last byte flipped
//   upstream.sentBytes(key)          body bytes written so far for that digest (all responses together)
//   upstream.stop()                  closes the server and destroys every open socket (hanging ones too)
//
// Also for fault tests (bottom of the file): rawGet (a node:http GET that reports a body cut short),
// waitUntil (bounded polling), committedBlobPath / temporaryFiles (what the fs store has under a data dir).
//
// With `ranges: true` a blob GET with one `Range: bytes=S-E` gets a 206 of those bytes, the mode applied to
// them (a cut, reset, flip or hold at detail.at counted from S, moved inside the range); otherwise Range is
// ignored and the whole object comes with a 200, as some upstreams do.
//
// Modes (for HEAD only the status modes and 'hang' apply; other modes answer HEAD normally):
//   'ok'              200, exact bytes, Content-Length
//   'cut'             Content-Length of the whole, about half the bytes (or detail.at), then the socket is destroyed
//   'reset'           Content-Length of the whole, about half the bytes (or detail.at), then a TCP reset (RST)
//   'wrong-bytes'     Content-Length of the whole, as many bytes, one of them flipped (the middle one, or detail.at)
//   'chunked-short'   no Content-Length (chunked), half the bytes (or detail.at), then a clean end of the response
//                     (to a Range: a 206 with no Content-Range either, as a broken upstream may send)
//   'status-429'      429 with Retry-After: 7 (or detail.retryAfterS) and an OCI error body
//   'status-500'      500 with an OCI error body naming this server's address (which must not leak)
//   'slow-drip'       200 with Content-Length, dripBytes every dripIntervalMs (or the detail's)
//   'hang'            reads the request, never answers
//   'hang-body'       200 with Content-Length, a few bytes, then nothing more, ever
//   'held'            200 with Content-Length, the first half (or detail.at bytes), then nothing until release()
//   'wrong-digest'    200, exact bytes, but a Docker-Content-Digest naming other bytes (HEAD too)

import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';

export type FaultMode =
  | 'ok'
  | 'cut'
  | 'reset'
  | 'wrong-bytes'
  | 'chunked-short'
  | 'status-429'
  | 'status-500'
  | 'slow-drip'
  | 'hang'
  | 'hang-body'
  | 'held'
  | 'wrong-digest';

/** How release() ends the responses 'held' keeps waiting. */
export type HeldEnding = 'rest' | 'cut' | 'wrong-rest';

/** Where a mode's fault strikes; each field applies to the modes it names, the others ignore it. */
export interface FaultDetail {
  /** 'cut', 'reset', 'held', 'chunked-short': bytes sent before the fault; 'wrong-bytes': the byte flipped. Default: half the object. */
  at?: number;
  /** 'status-429': the Retry-After sent, in seconds. Default 7. */
  retryAfterS?: number;
  /** 'slow-drip': bytes per tick. Default: the upstream's dripBytes. */
  dripBytes?: number;
  /** 'slow-drip': milliseconds between ticks. Default: the upstream's dripIntervalMs. */
  dripIntervalMs?: number;
}

export interface UpstreamRequestRecord {
  method: string;
  path: string;
  /** When the request arrived (Date.now()). */
  at: number;
}

interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/** One satisfiable `bytes=S-E` or `bytes=S-` range of a size-byte object; anything else is ignored (a 200). */
function byteRangeOf(header: string | undefined, size: number): ByteRange | undefined {
  const match = /^bytes=(\d+)-(\d*)$/.exec(header ?? '');
  if (match === null) return undefined;
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  return start <= end ? { start, end } : undefined;
}

export interface FaultUpstreamOptions {
  /** Layer blobs, served by digest and listed as the manifest's layers. */
  blobs: Buffer[];
  /** Repository name the content is served under (any other name gets 404). Default 'faults/app'. */
  repository?: string;
  /** Tags that all point at the one manifest. Default ['v1']. */
  tags?: string[];
  /** Bytes per tick in 'slow-drip'. Default 64 KiB. */
  dripBytes?: number;
  /** Milliseconds between ticks in 'slow-drip'. Default 100. */
  dripIntervalMs?: number;
  /** Answer a blob GET's single Range with a 206, as distribution does (the fault inside the range). Default: ignore Range. */
  ranges?: boolean;
}

export interface ServedManifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
}

export interface FaultUpstream {
  url: string;
  port: number;
  repository: string;
  tags: string[];
  blobDigests: string[];
  /** The config blob's digest (also served as a blob). */
  configDigest: string;
  config: Buffer;
  manifest: ServedManifest;
  setMode(mode: FaultMode, key?: string, detail?: FaultDetail): void;
  clearModes(): void;
  count(method: string, path: RegExp): number;
  requests(): UpstreamRequestRecord[];
  heldCount(): number;
  /** Ends every response 'held' keeps waiting; returns how many there were. */
  release(ending?: HeldEnding): number;
  sentBytes(key: string): number;
  stop(): Promise<void>;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
/** How many bytes 'hang-body' sends before it stalls. */
const HANG_BODY_BYTES = 1024;

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export async function startFaultUpstream(options: FaultUpstreamOptions): Promise<FaultUpstream> {
  const repository = options.repository ?? 'faults/app';
  const tags = options.tags ?? ['v1'];
  const dripBytes = options.dripBytes ?? 64 * 1024;
  const dripIntervalMs = options.dripIntervalMs ?? 100;

  const blobs = new Map<string, Buffer>();
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDigest = digestOf(config);
  blobs.set(configDigest, config);
  const blobDigests = options.blobs.map((bytes) => {
    const digest = digestOf(bytes);
    blobs.set(digest, bytes);
    return digest;
  });
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
      layers: options.blobs.map((bytes, index) => ({ mediaType: OCI_LAYER, digest: blobDigests[index], size: bytes.length })),
    }),
  );
  const manifest: ServedManifest = { digest: digestOf(manifestBytes), bytes: manifestBytes, mediaType: OCI_MANIFEST };

  interface Fault {
    mode: FaultMode;
    detail: FaultDetail;
  }
  const OK: Fault = { mode: 'ok', detail: {} };
  let defaultFault = OK;
  const modes = new Map<string, Fault>();
  const requests: UpstreamRequestRecord[] = [];
  const held = new Set<(ending: HeldEnding) => void>();
  const sent = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();

  const countSent = (key: string, bytes: number): void => {
    sent.set(key, (sent.get(key) ?? 0) + bytes);
  };

  const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  /**
   * Answers for one object (blob or manifest) according to its mode; with a range, a 206 with those bytes,
   * the fault striking at detail.at counted from the range's start (moved inside it).
   */
  const serve = (req: IncomingMessage, res: ServerResponse, key: string, object: Buffer, digest: string, contentType: string, { mode, detail }: Fault, range?: ByteRange): void => {
    const head = req.method === 'HEAD';
    const bytes = range === undefined ? object : object.subarray(range.start, range.end + 1);
    const status = range === undefined ? 200 : 206;
    // Where a cut, reset, flip or hold strikes: inside the answer, whatever the detail asked.
    const at = Math.max(0, Math.min(bytes.length, (detail.at ?? Math.floor(object.length / 2)) - (range?.start ?? 0)));
    const announced = mode === 'wrong-digest' ? digestOf(Buffer.concat([object, Buffer.from('not these bytes')])) : digest;
    const headers = {
      'content-type': contentType,
      'docker-content-digest': announced,
      'content-length': String(bytes.length),
      ...(range === undefined ? {} : { 'content-range': `bytes ${range.start}-${range.end}/${object.length}` }),
    };
    switch (mode) {
      case 'hang':
        return; // never answer; stop() destroys the socket
      case 'status-429':
        sendJson(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }, { 'retry-after': String(detail.retryAfterS ?? 7) });
        return;
      case 'status-500': {
        const address = `${req.socket.localAddress ?? ''}:${String(req.socket.localPort ?? '')}`;
        sendJson(res, 500, { errors: [{ code: 'UNKNOWN', message: `internal failure at ${address}`, detail: { stack: 'Error: boom\n    at upstream.js:1:1' } }] });
        return;
      }
      default:
        break;
    }
    if (head) {
      res.writeHead(status, headers);
      res.end();
      return;
    }
    switch (mode) {
      case 'ok':
      case 'wrong-digest':
        res.writeHead(status, headers);
        countSent(key, bytes.length);
        res.end(bytes);
        return;
      case 'cut':
      case 'reset': {
        const part = bytes.subarray(0, at);
        res.writeHead(status, headers);
        countSent(key, part.length);
        // Destroy only once the part reached the socket, so the mirror really sees a short body.
        res.write(part, () => {
          if (mode === 'cut') res.destroy();
          else req.socket.resetAndDestroy();
        });
        return;
      }
      case 'wrong-bytes': {
        const wrong = Buffer.from(bytes);
        const flipped = Math.min(at, wrong.length - 1);
        wrong[flipped] = (wrong[flipped] ?? 0) ^ 0xff;
        res.writeHead(status, headers);
        countSent(key, wrong.length);
        res.end(wrong);
        return;
      }
      case 'chunked-short': {
        const part = bytes.subarray(0, at);
        res.writeHead(status, { 'content-type': contentType, 'docker-content-digest': digest });
        countSent(key, part.length);
        res.end(part);
        return;
      }
      case 'held': {
        res.writeHead(status, headers);
        countSent(key, at);
        res.write(bytes.subarray(0, at));
        const finish = (ending: HeldEnding): void => {
          held.delete(finish);
          if (res.destroyed) return;
          if (ending === 'cut') {
            res.destroy();
            return;
          }
          const rest = Buffer.from(bytes.subarray(at));
          if (ending === 'wrong-rest' && rest.length > 0) rest[rest.length - 1] = (rest[rest.length - 1] ?? 0) ^ 0xff;
          countSent(key, rest.length);
          res.end(rest);
        };
        held.add(finish);
        res.once('close', () => held.delete(finish));
        return;
      }
      case 'hang-body': {
        const few = bytes.subarray(0, Math.min(HANG_BODY_BYTES, bytes.length));
        res.writeHead(status, headers);
        countSent(key, few.length);
        res.write(few);
        return; // stalls; stop() destroys the socket
      }
      case 'slow-drip': {
        const perTick = detail.dripBytes ?? dripBytes;
        res.writeHead(status, headers);
        let offset = 0;
        const tick = (): void => {
          if (res.destroyed) {
            clearInterval(timer);
            timers.delete(timer);
            return;
          }
          const chunk = bytes.subarray(offset, offset + perTick);
          offset += chunk.length;
          countSent(key, chunk.length);
          if (offset >= bytes.length) {
            clearInterval(timer);
            timers.delete(timer);
            res.end(chunk);
          } else {
            res.write(chunk);
          }
        };
        const timer = setInterval(tick, detail.dripIntervalMs ?? dripIntervalMs);
        timers.add(timer);
        res.once('close', () => {
          clearInterval(timer);
          timers.delete(timer);
        });
        tick();
        return;
      }
    }
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    requests.push({ method, path, at: Date.now() });
    req.resume();
    if (method !== 'GET' && method !== 'HEAD') {
      sendJson(res, 405, { errors: [{ code: 'UNSUPPORTED', message: 'read-only' }] });
      return;
    }
    if (path === '/v2/' || path === '/v2') {
      sendJson(res, 200, {});
      return;
    }
    const prefix = `/v2/${repository}/`;
    if (!path.startsWith(prefix)) {
      sendJson(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known to registry' }] });
      return;
    }
    const rest = path.slice(prefix.length);
    const manifestMatch = /^manifests\/([^/]+)$/.exec(rest);
    if (manifestMatch) {
      const reference = decodeURIComponent(manifestMatch[1] ?? '');
      if (!tags.includes(reference) && reference !== manifest.digest) {
        sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
        return;
      }
      serve(req, res, manifest.digest, manifest.bytes, manifest.digest, manifest.mediaType, modes.get(reference) ?? defaultFault);
      return;
    }
    const blobMatch = /^blobs\/(sha256:[0-9a-f]{64})$/.exec(rest);
    const blob = blobMatch ? blobs.get(blobMatch[1] ?? '') : undefined;
    if (blobMatch && blob !== undefined) {
      const digest = blobMatch[1] ?? '';
      const range = options.ranges === true && method === 'GET' ? byteRangeOf(req.headers.range, blob.length) : undefined;
      serve(req, res, digest, blob, digest, 'application/octet-stream', modes.get(digest) ?? defaultFault, range);
      return;
    }
    sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] });
  });
  const listening = await serveOnLoopback(server);
  const port = listening.port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    repository,
    tags,
    blobDigests,
    configDigest,
    config,
    manifest,
    setMode: (mode, key, detail = {}) => {
      if (key === undefined) defaultFault = { mode, detail };
      else modes.set(key, { mode, detail });
    },
    clearModes: () => {
      modes.clear();
      defaultFault = OK;
    },
    count: (method, path) => requests.filter((request) => request.method === method && path.test(request.path)).length,
    requests: () => requests.map((request) => ({ ...request })),
    heldCount: () => held.size,
    release: (ending = 'rest') => {
      const waiting = [...held];
      for (const finish of waiting) finish(ending);
      return waiting.length;
    },
    sentBytes: (key) => sent.get(key) ?? 0,
    stop: () => {
      for (const timer of timers) clearInterval(timer);
      timers.clear();
      held.clear();
      return listening.stop();
    },
  };
}

/**
 * Listens on a free 127.0.0.1 port; stop() closes the server and destroys every open socket (hanging ones
 * too). Sockets a client destroyed mid-answer are not the server's error.
 */
export async function serveOnLoopback(server: Server): Promise<{ port: number; stop(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_error, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('test server: no port');
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
    return stopping;
  };
  return { port: address.port, stop };
}

// ---- the client side of fault tests ----

export interface RawResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** The body ended cleanly with everything the framing promised (Content-Length or final chunk). */
  complete: boolean;
  /** Why the transfer failed, if it did (reset, aborted, or our own timeout). */
  error: Error | undefined;
}

export interface RawGetOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** The whole exchange is abandoned (and reported as an error) after this long. Default 30 s. */
  timeoutMs?: number;
  /** Called with each body chunk as it arrives. */
  onChunk?: (chunk: Buffer) => void;
  /** Called once the request is on the wire (flushed to the socket). */
  onSent?: () => void;
}

/**
 * One request over node:http without keep-alive, reporting a body cut short instead of hiding it:
 * never rejects once headers arrived; rejects if no headers came (connection refused, timeout).
 */
export function rawGet(url: string, options: RawGetOptions = {}): Promise<RawResponse> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise<RawResponse>((resolve, reject) => {
    const request = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers, agent: false });
    const timer = setTimeout(() => request.destroy(new Error(`${url}: no complete answer within ${timeoutMs} ms`)), timeoutMs);
    let answered = false;
    request.once('error', (error) => {
      clearTimeout(timer);
      if (!answered) reject(error);
    });
    request.once('response', (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      let failure: Error | undefined;
      response.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        options.onChunk?.(chunk);
      });
      response.once('error', (error) => {
        failure = error;
      });
      request.once('error', (error) => {
        failure ??= error;
      });
      response.once('close', () => {
        clearTimeout(timer);
        const complete = response.complete && failure === undefined;
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks),
          complete,
          error: complete ? undefined : (failure ?? new Error('response closed before it was complete')),
        });
      });
    });
    request.end(options.onSent);
  });
}

/** Polls check every 50 ms until it returns true; throws naming what after timeoutMs. */
export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Where the fs store keeps a committed blob under a data directory (blobs/sha256/<2 hex>/<hex>). */
export function committedBlobPath(dataDir: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

/** Names in the data directory's tmp/ folder ([] when it does not exist). */
export async function temporaryFiles(dataDir: string): Promise<string[]> {
  try {
    return await readdir(join(dataDir, 'tmp'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

export async function fileExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

export function sha256Of(bytes: Buffer): string {
  return digestOf(bytes);
}
