// The one way the mirror asks a remote registry for something (v2 upstreams, their token realms, the v1 source):
// a keep-alive pool per upstream, connections only where the AddressPolicy allows, redirects followed (to a CDN,
// Authorization dropped across origins, Range kept), deadlines (connect, headers, body idle, and one for a whole
// document), size caps on what is read whole, metrics, and every failure as an UpstreamFailure.

import { Agent, interceptors, type Dispatcher } from 'undici';
import type { Metrics, UpstreamRequestKind } from '../telemetry/metrics.js';
import { AddressPolicy, guardedConnector } from './address-policy.js';
import { failureOf, UpstreamFailure } from './failure.js';

export interface FetchTimeouts {
  /** TCP (and TLS) connect. */
  connectMs: number;
  /** From the request sent to the response headers. */
  responseHeadersMs: number;
  /** The longest pause between two chunks of a body. */
  bodyIdleMs: number;
  /** A whole document (manifest, tag list, token, v1 json): headers and body. Blobs have the fill's deadline instead. */
  documentMs: number;
}

export interface FetchRequest {
  method: 'GET' | 'HEAD';
  /** Path and query below the upstream's URL; or an absolute URL (a token realm the caller has checked). */
  path: string | URL;
  kind: UpstreamRequestKind;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Bound the whole exchange, body included, by the document deadline. */
  document?: boolean;
}

export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

export interface FetcherOptions {
  /** How metrics name the upstream. */
  label: string;
  url: string;
  timeouts: FetchTimeouts;
  /** Hosts on an internal network the upstream may send the mirror to, besides its own. */
  trustedHosts: readonly string[];
  metrics: Metrics;
}

const MAX_REDIRECTIONS = 5;

export class UpstreamFetcher {
  readonly label: string;
  private readonly origin: string;
  private readonly basePath: string;
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  private readonly metrics: Metrics;
  private readonly documentMs: number;

  constructor(options: FetcherOptions) {
    const url = new URL(options.url);
    this.label = options.label;
    this.origin = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.metrics = options.metrics;
    this.documentMs = options.timeouts.documentMs;
    const policy = new AddressPolicy(url.hostname, options.trustedHosts);
    this.agent = new Agent({
      connect: guardedConnector(policy, options.timeouts.connectMs),
      headersTimeout: options.timeouts.responseHeadersMs,
      bodyTimeout: options.timeouts.bodyIdleMs,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTIONS }));
  }

  /** Sends a request; any status is an answer. Throws UpstreamFailure when there is none. */
  async send(request: FetchRequest): Promise<UpstreamResponse> {
    const target = typeof request.path === 'string' ? { origin: this.origin, path: this.basePath + request.path } : { origin: request.path.origin, path: request.path.pathname + request.path.search };
    const labels = { upstream: this.label, kind: request.kind, method: request.method };
    const deadline = request.document === true ? new Deadline(this.documentMs, request.signal) : undefined;
    try {
      const response = await this.dispatcher.request({
        ...target,
        method: request.method,
        headers: { 'user-agent': 'regmirror', ...request.headers },
        signal: deadline?.signal ?? request.signal,
      });
      this.metrics.upstreamRequests.inc({ ...labels, status: String(response.statusCode) });
      if (deadline !== undefined) response.body.once('close', () => deadline.clear());
      // undici's body emits 'error' when it is destroyed before its end, as code that stops reading a body it will
      // not use does (a refused answer, a fill another request started first). Whoever reads the body sees its
      // errors through its own iterator or pipe; this listener only keeps one nobody reads from ending the process.
      response.body.on('error', ignoreErrorOfAbandonedBody);
      return { status: response.statusCode, headers: response.headers, body: response.body };
    } catch (error) {
      deadline?.clear();
      this.metrics.upstreamRequests.inc({ ...labels, status: '0' });
      throw failureOf(error);
    }
  }

  /** Reads a body whole, refusing more than limit bytes; a body that breaks off or runs past its deadline fails. */
  async readBody(response: UpstreamResponse, kind: UpstreamRequestKind, limit: number): Promise<Buffer> {
    const announced = contentLength(response.headers);
    if (announced !== undefined && announced > limit) {
      response.body.destroy();
      throw tooLarge(limit);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of response.body) {
        total += (chunk as Buffer).length;
        if (total > limit) throw tooLarge(limit);
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      response.body.destroy();
      throw failureOf(error);
    } finally {
      this.countBytes(kind, total);
    }
    return Buffer.concat(chunks);
  }

  countBytes(kind: UpstreamRequestKind, bytes: number): void {
    if (bytes > 0) this.metrics.upstreamBytes.inc({ upstream: this.label, kind }, bytes);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** Aborts a document's exchange when its deadline passes, or when the caller's own signal aborts. */
class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly forward: (() => void) | undefined;

  constructor(
    ms: number,
    private readonly outer: AbortSignal | undefined,
  ) {
    this.timer = setTimeout(() => this.controller.abort(new UpstreamFailure('timeout', `did not send its whole answer within ${Math.round(ms / 1000)} s`)), ms);
    if (outer !== undefined) {
      this.forward = () => this.controller.abort(outer.reason);
      if (outer.aborted) this.forward();
      else outer.addEventListener('abort', this.forward, { once: true });
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  clear(): void {
    clearTimeout(this.timer);
    if (this.forward !== undefined) this.outer?.removeEventListener('abort', this.forward);
  }
}

function tooLarge(limit: number): UpstreamFailure {
  return new UpstreamFailure('too-large', `sent an answer larger than ${limit} bytes`);
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The Content-Length an answer announced, when it is a plain number. */
export function contentLength(headers: UpstreamResponse['headers']): number | undefined {
  const text = headerValue(headers['content-length']);
  return text !== undefined && /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

/** See UpstreamFetcher.send: an error of a body its reader let go of has nobody to tell. */
function ignoreErrorOfAbandonedBody(): void {
  // nothing to do: the reader, if any, got the error through its own iterator or pipe
}
