// The one HTTP client for a v1 mirror's source registry and index: its own authentication (Basic, then the
// v1 token flow), timeouts, metrics, and failures as 502s naming no address; no client credential goes out.

import { SingleFlight } from '../flight/single-flight.js';
import type { Metrics, UpstreamRequestKind } from '../telemetry/metrics.js';
import { basicAuthorization, type Credentials } from '../upstream/credentials.js';
import { failureOf } from '../upstream/failure.js';
import { headerValue, UpstreamFetcher, type FetchTimeouts, type UpstreamResponse } from '../upstream/fetcher.js';
import { V1Error } from './errors.js';

/** How the source appears in metrics and the access log. */
export const SOURCE_NAME = 'v1-source';

/** The only client request headers that may reach the source; never Authorization or Cookie. */
const FORWARDED_HEADERS = ['user-agent', 'accept'] as const;

export interface V1SourceOptions {
  /** The source registry's URL. */
  source: string;
  /** Where index routes (repository images, search) go; the source when not set. */
  sourceIndex: string | undefined;
  credentials: Credentials | undefined;
  /** Hosts on an internal network the source may redirect the mirror to, besides its own and its index's. */
  trustedHosts: readonly string[];
}

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
  /** A document (json, tag list, image list): the whole exchange is bounded by the document deadline. */
  document?: boolean;
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
  private readonly index: URL;
  private readonly fetcher: UpstreamFetcher;
  /** Source tokens (`signature=…,repository="…",access=read`) by repository, from the index's X-Docker-Token. */
  private readonly tokens = new Map<string, string>();
  private latestToken: string | undefined;
  private readonly tokenRenewals = new SingleFlight<string, string | undefined>();

  constructor(
    private readonly settings: V1SourceOptions,
    timeouts: FetchTimeouts,
    metrics: Metrics,
  ) {
    this.index = new URL(settings.sourceIndex ?? settings.source);
    this.fetcher = new UpstreamFetcher({
      label: SOURCE_NAME,
      url: settings.source,
      timeouts,
      trustedHosts: [this.index.hostname, ...settings.trustedHosts],
      metrics,
    });
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
    this.fetcher.countBytes(kind, bytes);
  }

  /** The error for a source status that is neither a success nor a 404: the source failed, not the client. */
  errorFor(response: Pick<UpstreamResponse, 'status'>): V1Error {
    return new V1Error('SOURCE_UNAVAILABLE', { message: `source registry answered ${response.status}` });
  }

  unreachable(cause: unknown): V1Error {
    if (cause instanceof V1Error) return cause;
    return new V1Error('SOURCE_UNAVAILABLE', { message: `source registry ${failureOf(cause).reason}`, cause });
  }

  /** Reads a small document whole; a larger one, or a body that breaks off or runs past its deadline, is the source's failure. */
  async readDocument(response: UpstreamResponse, kind: UpstreamRequestKind, limit: number): Promise<Buffer> {
    try {
      return await this.fetcher.readBody(response, kind, limit);
    } catch (error) {
      throw this.unreachable(error);
    }
  }

  async close(): Promise<void> {
    await this.fetcher.close();
  }

  private tokenFor(repository: string | undefined): string | undefined {
    return repository === undefined ? this.latestToken : this.tokens.get(repository);
  }

  private basic(): string | undefined {
    return this.settings.credentials === undefined ? undefined : basicAuthorization(this.settings.credentials);
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
    const headers: Record<string, string> = { ...request.headers };
    if (authorization !== undefined) headers.authorization = authorization;
    if (request.target === 'index') headers['x-docker-token'] = 'true';
    // Index routes may live on another host (sourceIndex): they are asked by absolute URL.
    const path = request.target === 'index' ? new URL(this.index.pathname.replace(/\/+$/, '') + request.path, this.index.origin) : request.path;
    try {
      return await this.fetcher.send({ method: 'GET', path, kind: request.kind, headers, ...(request.signal === undefined ? {} : { signal: request.signal }), ...(request.document === true ? { document: true } : {}) });
    } catch (error) {
      throw this.unreachable(error);
    }
  }
}
