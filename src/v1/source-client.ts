// The one HTTP client for a v1 mirror's source registry and index: its own authentication (Basic, then the
// v1 token flow), timeouts, metrics, and failures as 502s naming no address; no client credential goes out.

import type { Agent, Dispatcher } from 'undici';
import type { Settings, V1MirroringSettings } from '../config/load.js';
import { describeFailure, headerValue, upstreamDispatcher, type UpstreamResponse } from '../mirror/upstream-client.js';
import type { Metrics, UpstreamRequestKind } from '../telemetry/metrics.js';
import { V1Error } from './errors.js';
import { SingleFlight } from '../flight/single-flight.js';

/** How the source appears in metrics and the access log. */
export const SOURCE_NAME = 'v1-source';

/** The only client request headers that may reach the source; never Authorization or Cookie. */
const FORWARDED_HEADERS = ['user-agent', 'accept'] as const;

export interface SourceRequest {
  /** Index routes (a repository's images, search) go to sourceIndex when it is set. */
  target: 'index' | 'registry';
  /** Path and query on the source, e.g. /v1/images/<id>/json. */
  path: string;
  kind: UpstreamRequestKind;
  /** The `namespace/repository` the request is for, when known: it picks the source token. */
  repository?: string;
  /** Headers from the client, already filtered by forwardedHeaders. */
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** The allow-listed subset of a client's headers. */
export function forwardedHeaders(client: Record<string, string | string[] | undefined>): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_HEADERS) {
    const value = headerValue(client[name]);
    if (value !== undefined) headers[name] = value;
  }
  return headers;
}

export class V1SourceClient {
  private readonly registry: URL;
  private readonly index: URL;
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  /** Source tokens (`signature=…,repository="…",access=read`) by repository, from the index's X-Docker-Token. */
  private readonly tokens = new Map<string, string>();
  private latestToken: string | undefined;
  private readonly tokenRenewals = new SingleFlight<string, string | undefined>();

  constructor(
    private readonly settings: V1MirroringSettings,
    timeouts: Settings['timeouts'],
    private readonly metrics: Metrics,
  ) {
    this.registry = new URL(settings.source);
    this.index = new URL(settings.sourceIndex ?? settings.source);
    // Redirects to another origin (a CDN for layers) drop the Authorization header.
    ({ agent: this.agent, dispatcher: this.dispatcher } = upstreamDispatcher(timeouts));
  }

  /**
   * A GET on the source. Index requests ask for a token (`X-Docker-Token: true`) and keep the one the index
   * grants; registry requests present it (`Authorization: Token …`), renewing it once on a 401.
   * Throws SOURCE_UNAVAILABLE when the source cannot be reached.
   */
  async send(request: SourceRequest): Promise<UpstreamResponse> {
    const token = request.target === 'registry' ? this.tokenFor(request.repository) : undefined;
    const response = await this.dispatch(request, token === undefined ? this.basic() : `Token ${token}`);
    if (request.target === 'index') this.learnToken(response, request.repository);
    if (response.status !== 401 || request.target !== 'registry' || request.repository === undefined) return response;
    await response.body.dump();
    const renewed = await this.renewToken(request.repository, token);
    if (renewed === undefined) throw this.errorFor(response);
    return this.dispatch(request, `Token ${renewed}`);
  }

  countBytes(kind: UpstreamRequestKind, bytes: number): void {
    this.metrics.upstreamBytes.inc({ upstream: SOURCE_NAME, kind }, bytes);
  }

  /** The error for a source status that is neither a success nor a 404: the source failed, not the client. */
  errorFor(response: Pick<UpstreamResponse, 'status'>): V1Error {
    return new V1Error('SOURCE_UNAVAILABLE', { message: `source registry answered ${response.status}` });
  }

  unreachable(cause: unknown): V1Error {
    if (cause instanceof V1Error) return cause;
    return new V1Error('SOURCE_UNAVAILABLE', { message: `source registry ${describeFailure(cause)}`, cause });
  }

  /** Reads a small document whole; a larger one, or a body that breaks off, is the source's failure. */
  async readDocument(response: UpstreamResponse, kind: UpstreamRequestKind, limit: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of response.body) {
        total += (chunk as Buffer).length;
        if (total > limit) throw new V1Error('SOURCE_UNAVAILABLE', { message: `source registry sent more than ${limit} bytes` });
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      response.body.destroy();
      throw this.unreachable(error);
    }
    this.countBytes(kind, total);
    return Buffer.concat(chunks);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private tokenFor(repository: string | undefined): string | undefined {
    return repository === undefined ? this.latestToken : this.tokens.get(repository);
  }

  private basic(): string | undefined {
    const credentials = this.settings.credentials;
    if (credentials === undefined) return undefined;
    return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
  }

  private learnToken(response: UpstreamResponse, repository: string | undefined): void {
    const header = headerValue(response.headers['x-docker-token'])?.trim();
    if (header === undefined || header === '') return;
    // docker-registry's standalone index sends the scheme too; the Docker index sends the bare value.
    const token = header.replace(/^Token\s+/i, '');
    this.latestToken = token;
    if (repository !== undefined) this.tokens.set(repository, token);
  }

  /** Asks the index for a new token for the repository (one request however many wait); undefined when none comes. */
  private renewToken(repository: string, refused: string | undefined): Promise<string | undefined> {
    return this.tokenRenewals.run(repository, async () => {
      if (this.tokens.get(repository) === refused) this.tokens.delete(repository);
      const response = await this.send({ target: 'index', path: `/v1/repositories/${repository}/images`, kind: 'v1-index', repository });
      await response.body.dump();
      const token = this.tokens.get(repository);
      return response.status === 200 && token !== refused ? token : undefined;
    });
  }

  private async dispatch(request: SourceRequest, authorization: string | undefined): Promise<UpstreamResponse> {
    const base = request.target === 'index' ? this.index : this.registry;
    const headers: Record<string, string> = { 'user-agent': 'regmirror', ...request.headers };
    if (authorization !== undefined) headers.authorization = authorization;
    if (request.target === 'index') headers['x-docker-token'] = 'true';
    const labels = { upstream: SOURCE_NAME, kind: request.kind, method: 'GET' };
    try {
      const response = await this.dispatcher.request({
        origin: base.origin,
        path: base.pathname.replace(/\/+$/, '') + request.path,
        method: 'GET',
        headers,
        signal: request.signal,
      });
      this.metrics.upstreamRequests.inc({ ...labels, status: String(response.statusCode) });
      return { status: response.statusCode, headers: response.headers, body: response.body };
    } catch (error) {
      this.metrics.upstreamRequests.inc({ ...labels, status: '0' });
      throw this.unreachable(error);
    }
  }
}
