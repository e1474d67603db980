// The HTTP Range header for a single byte range (RFC 9110 §14), resolved against a known size.
// Anything malformed or asking for several ranges is ignored (a 200), as HTTP allows.

export type RangeRequest =
  | { kind: 'none' }
  | { kind: 'range'; start: number; end: number } // inclusive, within the object
  | { kind: 'unsatisfiable' };

type Spec = { start: number; end: number | undefined } | { suffix: number };

const SINGLE_RANGE = /^bytes=(?:(\d+)-(\d*)|-(\d+))$/;

/** Parses the header alone; the size is not known yet (a cold blob). */
export function parseRangeSpec(header: string | undefined): Spec | undefined {
  if (header === undefined) return undefined;
  const match = SINGLE_RANGE.exec(header.trim());
  if (!match) return undefined;
  const [, first, last, suffix] = match;
  if (suffix !== undefined) return { suffix: Number(suffix) };
  const start = Number(first);
  const end = last === '' || last === undefined ? undefined : Number(last);
  if (!Number.isSafeInteger(start) || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) return undefined;
  return { start, end };
}

export function resolveRange(header: string | undefined, size: number): RangeRequest {
  const spec = parseRangeSpec(header);
  if (spec === undefined) return { kind: 'none' };
  if ('suffix' in spec) {
    if (spec.suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - spec.suffix), end: size - 1 };
  }
  if (spec.start >= size) return { kind: 'unsatisfiable' };
  const end = spec.end === undefined ? size - 1 : Math.min(spec.end, size - 1);
  return { kind: 'range', start: spec.start, end };
}

export function contentRange(start: number, end: number, size: number | '*'): string {
  return `bytes ${start}-${end}/${size}`;
}

export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`;
}
