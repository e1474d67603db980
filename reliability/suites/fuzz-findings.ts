// The fuzz suite's violations, grouped by route kind and kind of problem and counted, each with the shortest
// request that showed it; and the simpler variants of a request tried to bring it to a minimal reproduction.

import type { Violation } from '../lib/result.js';
import type { FuzzRequest, TargetName } from './fuzz-requests.js';

/** A problem's kind: its text before the first colon (`answered 500`, `v1 error shape`, …). */
export function categoryOf(problem: string): string {
  const colon = problem.indexOf(':');
  return colon === -1 ? problem : problem.slice(0, colon);
}

export interface Finding {
  sent: string;
  problem: string;
  count: number;
  /** The generated request behind it, when one request showed it (not for memory or start-up findings). */
  origin?: { request: FuzzRequest; target: TargetName };
  /** Set once the request was sent again, simplified: whether the problem recurred. */
  reproduced?: boolean;
}

export class Findings {
  private readonly byKey = new Map<string, Finding>();
  total = 0;

  add(key: string, finding: Omit<Finding, 'count'>): void {
    this.total++;
    const earlier = this.byKey.get(key);
    if (earlier === undefined) this.byKey.set(key, { ...finding, count: 1 });
    else {
      earlier.count++;
      if (finding.sent.length < earlier.sent.length) Object.assign(earlier, finding);
    }
  }

  /** A problem one request showed: grouped with others of its route kind and category. */
  addForRequest(origin: { request: FuzzRequest; target: TargetName }, sent: string, problem: string): void {
    this.add(`${origin.request.kind} ${categoryOf(problem)}`, { sent, problem, origin });
  }

  get findings(): Finding[] {
    return [...this.byKey.values()];
  }

  list(): Violation[] {
    return this.findings.map(({ sent, problem, count, reproduced }) => {
      const notes = [count > 1 ? `×${count}` : '', reproduced === false ? 'did not recur when sent again' : ''].filter((text) => text !== '');
      return { sent, problem: notes.length === 0 ? problem : `${problem} [${notes.join('; ')}]` };
    });
  }
}

/** Variants of a request with one thing less (a header, the body, the query, an odd Host or version), simplest first. */
export function* simplerRequests(request: FuzzRequest): Generator<FuzzRequest> {
  if (request.body !== undefined) yield { ...request, body: undefined };
  for (let index = 0; index < request.headers.length; index++) yield { ...request, headers: request.headers.filter((_, other) => other !== index) };
  if (request.host.kind !== 'own') yield { ...request, host: { kind: 'own' } };
  if (request.version !== 'HTTP/1.1') yield { ...request, version: 'HTTP/1.1' };
  const query = request.path.search(/[?#]/);
  if (query > 0) yield { ...request, path: request.path.slice(0, query) };
  const body = request.body;
  if (body === undefined) return;
  if (body.mode !== 'exact') yield { ...request, body: { ...body, mode: 'exact' } };
  const { content } = body;
  if (content.kind === 'bytes' && content.size > 1) yield { ...request, body: { ...body, content: { ...content, size: Math.floor(content.size / 2) } } };
  if (content.kind === 'text' && content.text.length > 1) yield { ...request, body: { ...body, content: { kind: 'text', text: content.text.slice(0, Math.floor(content.text.length / 2)) } } };
}
