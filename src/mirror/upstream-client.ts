// The v2 client of one upstream registry: the shared fetch path (src/upstream/fetcher.ts) plus what is v2's own —
// the Bearer/Basic challenge flow, the upstream's budget and circuit, and upstream failures as wire errors that
// never name an internal address.

import { RegistryError, type ErrorCodeName } from '../registry/errors.js';
import type { Metrics, UpstreamRequestKind } from '../telemetry/metrics.js';
import type { Credentials } from '../upstream/credentials.js';
import { failureOf } from '../upstream/failure.js';
import { headerValue, UpstreamFetcher, type FetchTimeouts, type UpstreamResponse } from '../upstream/fetcher.js';
import { RealmRefusedError, TokenError, UpstreamAuth, type TokenAnswer } from './upstream-auth.js';
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
  /** A document (manifest, tag list): the whole exchange is bounded by the document deadline. */
  document?: boolean;
}

export interface UpstreamClientOptions {
  /** The registry name, for metrics and logs. */
  registry: string;
  /** How client-facing messages name this upstream. */
  wireName: string;
  url: string;
  credentials: Credentials | undefined;
  trustedHosts: readonly string[];
}

/** Used when an upstream rate-limits without saying for how long. */
const DEFAULT_RETRY_AFTER_S = 60;
/** A token service's answer is a few KiB at most. */
export const MAX_TOKEN_ANSWER_BYTES = 1024 * 1024;

/** Where a circuit opened here is told, for the other nodes of a cluster (cluster/cluster.ts). */
export interface CircuitSharing {
  opened(opening: { registry: string; reason: 'rate-limited' | 'failing'; openUntil: number; cause: string }): void;
}

export class UpstreamClient {
  readonly registry: string;
  readonly wireName: string;
  private readonly fetcher: UpstreamFetcher;
  private readonly auth: UpstreamAuth;
  private readonly budget: UpstreamBudget;
  private readonly retryAfterMaxS: number;

  constructor(options: UpstreamClientOptions, timeouts: FetchTimeouts, policy: BudgetPolicy, metrics: Metrics, log: CircuitLogger, sharing?: CircuitSharing) {
    this.registry = options.registry;
    this.wireName = options.wireName;
    this.retryAfterMaxS = Math.max(1, Math.ceil(policy.backoffMaxMs / 1000));
    this.fetcher = new UpstreamFetcher({ label: options.registry, url: options.url, timeouts, trustedHosts: options.trustedHosts, metrics });
    this.auth = new UpstreamAuth(options.credentials, new URL(options.url), (url, headers) => this.fetchToken(url, headers));
    const upstream = this.registry;
    this.budget = new UpstreamBudget(this.wireName, policy, {
      opened: (reason, waitMs, cause, seenHere) => {
        metrics.circuitOpen.set({ upstream }, 1);
        metrics.circuitOpenings.inc({ upstream, reason });
        log.warn({ upstream, reason, waitMs, cause, ...(seenHere ? {} : { sharedByAnotherNode: true }) }, 'upstream circuit opened');
        if (seenHere) sharing?.opened({ registry: upstream, reason, openUntil: Date.now() + waitMs, cause });
      },
      closed: () => {
        metrics.circuitOpen.set({ upstream }, 0);
        log.info({ upstream }, 'upstream circuit closed');
      },
    });
    metrics.circuitOpen.set({ upstream }, 0);
  }

  /** An opening of this upstream's circuit another node saw (a cluster shares them): fail fast here too. */
  adoptOpening(reason: 'rate-limited' | 'failing', openUntil: number, cause: string): void {
    this.budget.adoptOpening(reason, openUntil, cause);
  }

  /** Budget, circuit and last error, for /_regmirror/status. */
  status(): BudgetSnapshot {
    return this.budget.snapshot();
  }

  /** Sends a request, answering one authentication challenge. Throws RegistryError when there is no answer. */
  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    const admission = this.budget.admit();
    try {
      return await this.sendAuthenticated(request);
    } catch (error) {
      if (admission === 'probe') this.budget.abandonProbe(error as Error);
      throw error;
    }
  }

  /** Reads a document's body whole (at most limit bytes, within its deadline). Throws RegistryError. */
  async readBody(response: UpstreamResponse, kind: UpstreamRequestKind, limit: number): Promise<Buffer> {
    try {
      return await this.fetcher.readBody(response, kind, limit);
    } catch (error) {
      throw this.unreachable(error);
    }
  }

  countBytes(kind: UpstreamRequestKind, bytes: number): void {
    this.fetcher.countBytes(kind, bytes);
  }

  async close(): Promise<void> {
    await this.fetcher.close();
  }

  /** The wire error for an upstream status that is not a success. */
  errorFor(response: UpstreamResponse, notFound: ErrorCodeName): RegistryError {
    const status = response.status;
    if (status === 404) return new RegistryError(notFound, { detail: { upstream: this.wireName } });
    if (status === 429) {
      // Passed on to the client, but never longer than the circuit itself would wait.
      const asked = Number(headerValue(response.headers['retry-after']) ?? Number.NaN);
      const retryAfter = Number.isFinite(asked) && asked >= 0 ? Math.min(asked, this.retryAfterMaxS) : Math.min(DEFAULT_RETRY_AFTER_S, this.retryAfterMaxS);
      return new RegistryError('TOOMANYREQUESTS', {
        message: `upstream ${this.wireName} is rate-limiting requests`,
        headers: { 'retry-after': String(retryAfter) },
      });
    }
    if (status === 401 || status === 403) {
      return new RegistryError('DENIED', { message: `upstream ${this.wireName} denied access to this repository` });
    }
    return new RegistryError('UPSTREAM_UNAVAILABLE', {
      message: `upstream ${this.wireName} answered ${status}`,
    });
  }

  /** The wire error for a request that got no usable answer at all: 504 when a deadline passed, else 502. */
  unreachable(cause: unknown): RegistryError {
    if (cause instanceof RegistryError) return cause;
    const failure = failureOf(cause);
    const code = failure.kind === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
    return new RegistryError(code, { message: `upstream ${this.wireName} ${failure.reason}`, cause });
  }

  private async sendAuthenticated(request: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = `repository:${request.repository}:pull`;
    let authorization = await this.authorizationFor(scope);
    let response = await this.dispatch(request, authorization);
    if (response.status === 401) {
      let retry: boolean;
      try {
        retry = this.auth.acceptChallenge(headerValue(response.headers['www-authenticate']), scope, authorization);
      } catch (error) {
        await response.body.dump();
        throw this.authError(error);
      }
      if (retry) {
        await response.body.dump();
        authorization = await this.authorizationFor(scope);
        response = await this.dispatch(request, authorization);
      }
    }
    return response;
  }

  private async authorizationFor(scope: string): Promise<string | undefined> {
    try {
      return await this.auth.authorization(scope);
    } catch (error) {
      throw this.authError(error);
    }
  }

  private authError(error: unknown): RegistryError {
    if (error instanceof RealmRefusedError) {
      return new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${this.wireName} ${error.message}`, cause: error });
    }
    if (error instanceof TokenError && (error.status === 401 || error.status === 403)) {
      return new RegistryError('DENIED', { message: `upstream ${this.wireName} refused the configured credentials`, cause: error });
    }
    if (error instanceof TokenError) {
      return new RegistryError('UPSTREAM_UNAVAILABLE', { message: `upstream ${this.wireName}'s ${error.message}`, cause: error });
    }
    return this.unreachable(error);
  }

  private async dispatch(request: UpstreamRequest, authorization: string | undefined): Promise<UpstreamResponse> {
    const headers: Record<string, string> = { ...request.headers };
    if (authorization !== undefined) headers.authorization = authorization;
    try {
      const response = await this.fetcher.send({ ...request, headers });
      this.budget.recordResponse(response.status, response.headers);
      return response;
    } catch (error) {
      const failure = this.unreachable(error);
      // An abort at shutdown says nothing about the upstream.
      if (failureOf(error).kind !== 'aborted') this.budget.recordFailure(failure);
      throw failure;
    }
  }

  /** A token realm's answer: the status, and the body when it is a success (within the deadline and size cap). */
  private async fetchToken(url: URL, headers: Record<string, string>): Promise<TokenAnswer> {
    const response = await this.fetcher.send({ method: 'GET', path: url, kind: 'token', headers, document: true });
    if (response.status !== 200) {
      await response.body.dump();
      return { status: response.status, body: Buffer.alloc(0) };
    }
    return { status: 200, body: await this.fetcher.readBody(response, 'token', MAX_TOKEN_ANSWER_BYTES) };
  }
}

export interface CircuitLogger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}
