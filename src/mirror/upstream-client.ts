// The one HTTP client for an upstream registry: keep-alive pool, timeouts, redirects (registry → CDN,
// Authorization dropped across origins), authentication, metrics, and upstream failures turned into
// clear wire errors that never name an internal address.

import { Agent, interceptors, type Dispatcher } from 'undici';
import type { Settings, UpstreamSettings } from '../config/load.js';
import { RegistryError, type ErrorCodeName } from '../registry/errors.js';
import type { Metrics, UpstreamRequestKind } from '../telemetry/metrics.js';
import { RealmRefusedError, TokenError, UpstreamAuth } from './upstream-auth.js';
import { UpstreamBudget, type BudgetPolicy, type BudgetSnapshot } from './upstream-budget.js';

export interface UpstreamRequest {
  method: 'GET' | 'HEAD';
  /** Path and query on the upstream, e.g. /v2/library/alpine/manifests/3.20. */
  path: string;
  /** Repository name on the upstream; decides the token scope. */
  repository: string;
  kind: UpstreamRequestKind;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

/** Used when an upstream rate-limits without saying for how long. */
const DEFAULT_RETRY_AFTER_S = 60;
const MAX_REDIRECTIONS = 5;

export class UpstreamClient {
  readonly registry: string;
  /** How client-facing messages name this upstream (see UpstreamSettings.wireName). */
  readonly wireName: string;
  private readonly origin: string;
  private readonly basePath: string;
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  private readonly auth: UpstreamAuth;
  private readonly budget: UpstreamBudget;

  constructor(
    settings: UpstreamSettings,
    timeouts: Settings['timeouts'],
    policy: BudgetPolicy,
    private readonly metrics: Metrics,
    log: CircuitLogger,
  ) {
    this.registry = settings.registry;
    const url = new URL(settings.url);
    this.wireName = settings.wireName;
    this.origin = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
    ({ agent: this.agent, dispatcher: this.dispatcher } = upstreamDispatcher(timeouts));
    this.auth = new UpstreamAuth(settings.credentials, url, (tokenUrl, headers) => this.fetchToken(tokenUrl, headers));
    const upstream = this.registry;
    this.budget = new UpstreamBudget(this.wireName, policy, {
      opened: (reason, waitMs, cause) => {
        metrics.circuitOpen.set({ upstream }, 1);
        metrics.circuitOpenings.inc({ upstream, reason });
        log.warn({ upstream, reason, waitMs, cause }, 'upstream circuit opened');
      },
      closed: () => {
        metrics.circuitOpen.set({ upstream }, 0);
        log.info({ upstream }, 'upstream circuit closed');
      },
    });
    metrics.circuitOpen.set({ upstream }, 0);
  }

  /** Budget, circuit and last error, for /_regmirror/status. */
  status(): BudgetSnapshot {
    return this.budget.snapshot();
  }

  /** Sends a request, answering one authentication challenge. Throws RegistryError when unreachable. */
  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    const admission = this.budget.admit();
    try {
      return await this.sendAuthenticated(request);
    } catch (error) {
      if (admission === 'probe') this.budget.abandonProbe(error as Error);
      throw error;
    }
  }

  private async sendAuthenticated(request: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = `repository:${request.repository}:pull`;
    let authorization = await this.authorizationFor(scope);
    let response = await this.dispatch(request, authorization);
    if (response.statusCode === 401) {
      const retry = this.auth.acceptChallenge(headerValue(response.headers['www-authenticate']), scope, authorization);
      if (retry) {
        await response.body.dump();
        authorization = await this.authorizationFor(scope);
        response = await this.dispatch(request, authorization);
      }
    }
    return { status: response.statusCode, headers: response.headers, body: response.body };
  }

  countBytes(kind: UpstreamRequestKind, bytes: number): void {
    this.metrics.upstreamBytes.inc({ upstream: this.registry, kind }, bytes);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** The wire error for an upstream status that is not a success. */
  errorFor(response: UpstreamResponse, notFound: ErrorCodeName): RegistryError {
    const status = response.status;
    if (status === 404) return new RegistryError(notFound, { detail: { upstream: this.wireName } });
    if (status === 429) {
      const retryAfter = headerValue(response.headers['retry-after']) ?? String(DEFAULT_RETRY_AFTER_S);
      return new RegistryError('TOOMANYREQUESTS', {
        message: `upstream ${this.wireName} is rate-limiting requests`,
        headers: { 'retry-after': retryAfter },
      });
    }
    if (status === 401 || status === 403) {
      return new RegistryError('DENIED', { message: `upstream ${this.wireName} denied access to this repository` });
    }
    return new RegistryError('UPSTREAM_UNAVAILABLE', {
      message: `upstream ${this.wireName} answered ${status}`,
    });
  }

  /** The wire error for a request that got no usable answer at all. */
  unreachable(cause: unknown): RegistryError {
    if (cause instanceof RegistryError) return cause;
    const reason = describeFailure(cause);
    return new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${this.wireName} ${reason}`, cause });
  }

  private async authorizationFor(scope: string): Promise<string | undefined> {
    try {
      return await this.auth.authorization(scope);
    } catch (error) {
      if (error instanceof RealmRefusedError) {
        throw new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${this.wireName} ${error.message}`, cause: error });
      }
      if (error instanceof TokenError && (error.status === 401 || error.status === 403)) {
        throw new RegistryError('DENIED', { message: `upstream ${this.wireName} refused the configured credentials`, cause: error });
      }
      throw this.unreachable(error);
    }
  }

  private async dispatch(request: UpstreamRequest, authorization: string | undefined): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { 'user-agent': 'regmirror', ...request.headers };
    if (authorization !== undefined) headers.authorization = authorization;
    const labels = { upstream: this.registry, kind: request.kind, method: request.method };
    try {
      const response = await this.dispatcher.request({
        origin: this.origin,
        path: this.basePath + request.path,
        method: request.method,
        headers,
        signal: request.signal,
      });
      this.metrics.upstreamRequests.inc({ ...labels, status: String(response.statusCode) });
      this.budget.recordResponse(response.statusCode, response.headers);
      const remaining = this.budget.rateLimitRemaining;
      if (remaining !== undefined) this.metrics.rateLimitRemaining.set({ upstream: this.registry }, remaining);
      return response;
    } catch (error) {
      this.metrics.upstreamRequests.inc({ ...labels, status: '0' });
      const failure = this.unreachable(error);
      // An abort at shutdown says nothing about the upstream.
      if (request.signal?.aborted !== true) this.budget.recordFailure(failure);
      throw failure;
    }
  }

  private async fetchToken(url: URL, headers: Record<string, string>): Promise<Dispatcher.ResponseData> {
    const labels = { upstream: this.registry, kind: 'token' as const, method: 'GET' };
    try {
      const response = await this.dispatcher.request({ origin: url.origin, path: url.pathname + url.search, method: 'GET', headers });
      this.metrics.upstreamRequests.inc({ ...labels, status: String(response.statusCode) });
      return response;
    } catch (error) {
      this.metrics.upstreamRequests.inc({ ...labels, status: '0' });
      throw this.unreachable(error);
    }
  }
}

export interface CircuitLogger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

/**
 * The pool every client of a remote registry uses (v2 upstreams, the v1 source): keep-alive, the configured
 * timeouts, and redirects followed (to a CDN, Authorization dropped across origins, Range kept).
 */
export function upstreamDispatcher(timeouts: Settings['timeouts']): { agent: Agent; dispatcher: Dispatcher } {
  const agent = new Agent({
    connect: { timeout: timeouts.connect },
    headersTimeout: timeouts.responseHeaders,
    bodyTimeout: timeouts.bodyIdle,
    keepAliveTimeout: 30_000,
    connections: 64,
  });
  return { agent, dispatcher: agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTIONS })) };
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A reason fit for a client: the kind of failure, never an address. Also used by the v1 source client. */
export function describeFailure(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'did not accept a connection in time';
    case 'UND_ERR_HEADERS_TIMEOUT':
      return 'did not answer in time';
    case 'UND_ERR_BODY_TIMEOUT':
      return 'stopped sending data';
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'is unreachable';
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
      return 'closed the connection';
    default:
      return 'failed';
  }
}
