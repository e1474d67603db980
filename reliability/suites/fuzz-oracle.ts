// What a fuzzed answer must be (DESIGN.md invariant 6): below 500, in time, complete, a HEAD without a body,
// every error in its protocol's shape (v2: {"errors":[{code,message}]} with a registered code; v1 and
// /_ping: {"error": "…"}), and nothing of the machine in it (no stack, no canary file, no path outside).

import { ErrorCode } from '../../src/registry/errors.js';
import type { RawOutcome } from '../lib/raw-http.js';
import type { FuzzRequest, TargetName } from './fuzz-requests.js';
import type { Wire } from './fuzz-wire.js';

export interface Judgement {
  /** The status histogram's key: the status, or `hang`, `closed`. */
  outcome: string;
  /** The HTTP layer refused a request whose framing is broken, before any route (allowed). */
  refusedByHttp: boolean;
  /**
   * Content served under a repository that does not hold it. DESIGN.md wants it served only under one that does,
   * which needs the content graph and client authentication (issues 10 and 11): until then it is counted, not a
   * violation (with no client authentication, any client may name any repository anyway).
   */
  servedUnderAnotherName: boolean;
  /** Each with a short category first (`answered 500`, `v2 error shape`, …) then `: ` and the detail. */
  problems: string[];
}

/** What the oracle knows beyond the request: the machine's secrets, and which repository holds what. */
export interface Expectations {
  /** Texts only the canaries' sentinel files hold. */
  markers: string[];
  /** Paths of this machine an answer must never show (the data directories and their canaries). */
  paths: string[];
  /**
   * Per target, `name@reference` for every manifest (by tag and digest) and blob a repository holds; content is
   * served only under a repository that holds it (DESIGN.md, the content graph), anything else is unknown.
   */
  held: Record<TargetName, ReadonlySet<string>>;
}

const REGISTERED_CODES = new Set(Object.keys(ErrorCode));
/** What fastify's clientError handler and node's own Host check send for a request they cannot parse. */
const HTTP_LAYER_BODY = /^\{"error":"[^"]*","message":"(?:Client Error|Exceeded maximum allowed HTTP header size)","statusCode":\d{3}\}$/;
/** A manifest or blob of a well-formed name: what the content graph decides. */
const CONTENT_PATH = /^\/v2\/([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)\/(manifests|blobs)\/([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})(?:[?#]|$)/;
const STACK_LINE = /\n\s+at .+[(/].+:\d+:\d+/;

export function judge(request: FuzzRequest, wire: Wire, outcome: RawOutcome, deadlineMs: number, expected: Expectations): Judgement {
  if (outcome.kind === 'hang') {
    return { outcome: 'hang', refusedByHttp: false, servedUnderAnotherName: false, problems: [`no answer: nothing whole within ${deadlineMs} ms (received ${outcome.received.length} bytes)`] };
  }
  if (outcome.kind === 'closed') {
    // A request cut short or unparsable may be dropped; a well-formed, whole one gets an answer.
    if (outcome.whileSending) return { outcome: 'closed while sending', refusedByHttp: false, servedUnderAnotherName: false, problems: [] };
    const excused = wire.halfClose || wire.malformed.length > 0;
    const problems = excused ? [] : [`closed without an answer: ${outcome.error ?? 'closed'} after ${outcome.received.length} bytes`];
    return { outcome: 'closed', refusedByHttp: false, servedUnderAnotherName: false, problems };
  }

  const problems: string[] = [];
  const { status, body } = outcome;
  const bodyText = body.toString('utf8');
  const snippet = JSON.stringify(bodyText.slice(0, 300));
  if (status >= 500) problems.push(`answered ${status}: ${snippet}`);

  // That layer does not know the method: its body follows the head even on a HEAD.
  const refusalText = (request.method === 'HEAD' ? outcome.trailing : body).toString('utf8');
  const httpLayer = status >= 400 && ((status === 400 && refusalText === '' && !outcome.headers.has('content-type')) || HTTP_LAYER_BODY.test(refusalText));
  if (httpLayer && wire.malformed.length > 0) return { outcome: String(status), refusedByHttp: true, servedUnderAnotherName: false, problems };
  if (httpLayer) problems.push(`refused by the HTTP layer, not the protocol: ${status} ${snippet} for a well-formed request`);
  else if (status >= 400 && request.method !== 'HEAD') {
    const shape = family(request.path) === 'v1' ? v1ShapeProblem(outcome.headers, bodyText) : v2ShapeProblem(outcome.headers, bodyText);
    if (shape !== undefined) problems.push(`${family(request.path)} error shape: ${shape} in ${status} ${snippet}`);
  }

  const content = CONTENT_PATH.exec(request.path);
  let servedUnderAnotherName = false;
  if (content !== null && (request.method === 'GET' || request.method === 'HEAD') && [200, 206, 304, 416].includes(status)) {
    const [, name = '', , reference = ''] = content;
    servedUnderAnotherName = !expected.held[request.target].has(`${name}@${reference}`);
  }
  // A request for content that exists, well formed: served (whole, a range, not modified, or a range past its end).
  if (request.kind.startsWith('valid-') && ![200, 206, 304, 416].includes(status)) problems.push(`valid request not served: ${status} ${snippet}`);
  if (request.method === 'HEAD' && outcome.trailing.length > 0 && !outcome.trailing.subarray(0, 5).equals(Buffer.from('HTTP/'))) {
    problems.push(`HEAD answer with a body: ${outcome.trailing.length} bytes after the head`);
  }
  if (!outcome.complete) problems.push(`body shorter than announced: ${body.length} bytes, ${outcome.headers.get('content-length')?.[0] ?? 'chunked'} announced`);

  const everything = Buffer.concat([body, outcome.trailing]).toString('latin1') + [...outcome.headers.values()].flat().join('\n');
  if (expected.markers.some((marker) => everything.includes(marker))) problems.push('answer holds a canary file: the sentinel marker is in it');
  // A path the request itself carried may come back in an error's detail; any other is a leak.
  for (const path of expected.paths) if (everything.includes(path) && !wire.bytes.includes(path)) problems.push(`answer shows a local path: ${path}`);
  if (STACK_LINE.test(bodyText)) problems.push(`answer holds a stack trace: ${snippet}`);
  return { outcome: String(status), refusedByHttp: false, servedUnderAnotherName, problems };
}

/**
 * Which error shape a path's answer owes: v1 for /_ping and /v1/…, v2 for everything else (the v2 routes and
 * the registry's not-found). The router decodes unreserved escapes and stops at `?` or `#`, so this does too.
 */
export function family(path: string): 'v1' | 'v2' {
  const end = path.search(/[?#]/);
  const raw = end === -1 ? path : path.slice(0, end);
  const decoded = raw.replace(/%([0-9A-Fa-f]{2})/g, (escape, code: string) => {
    const char = String.fromCharCode(Number.parseInt(code, 16));
    return /[A-Za-z0-9._~-]/.test(char) ? char : escape;
  });
  return decoded === '/_ping' || decoded.startsWith('/v1/') ? 'v1' : 'v2';
}

function jsonBody(headers: Map<string, string[]>, text: string): { value: unknown } | string {
  const type = headers.get('content-type')?.[0] ?? '';
  if (!/^application\/json\b/i.test(type)) return `Content-Type ${JSON.stringify(type)}`;
  try {
    return { value: JSON.parse(text) as unknown };
  } catch {
    return 'body is not JSON';
  }
}

function v2ShapeProblem(headers: Map<string, string[]>, text: string): string | undefined {
  const parsed = jsonBody(headers, text);
  if (typeof parsed === 'string') return parsed;
  const errors = (parsed.value as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(errors) || errors.length === 0) return 'no "errors" list';
  for (const entry of errors as unknown[]) {
    const { code, message } = (entry ?? {}) as { code?: unknown; message?: unknown };
    if (typeof code !== 'string' || !REGISTERED_CODES.has(code)) return `code ${JSON.stringify(code)} is not a registered one`;
    if (typeof message !== 'string') return 'an error without a message';
  }
  return undefined;
}

function v1ShapeProblem(headers: Map<string, string[]>, text: string): string | undefined {
  const parsed = jsonBody(headers, text);
  if (typeof parsed === 'string') return parsed;
  const value = parsed.value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  if (typeof (value as { error?: unknown }).error !== 'string') return 'no "error" string';
  return undefined;
}
