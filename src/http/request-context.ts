// What a request turned out to be, filled in by handlers and read by the access log and metrics.

import type { FastifyRequest } from 'fastify';
import type { CacheOutcome } from '../telemetry/metrics.js';

export interface RequestFacts {
  kind?: string;
  cache?: CacheOutcome;
  upstream?: string;
}

const facts = new WeakMap<FastifyRequest, RequestFacts>();

export function describeRequest(request: FastifyRequest, update: RequestFacts): void {
  facts.set(request, { ...facts.get(request), ...update });
}

export function factsOf(request: FastifyRequest): RequestFacts {
  return facts.get(request) ?? {};
}
