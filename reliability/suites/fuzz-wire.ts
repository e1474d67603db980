// A generated request as the bytes that go on the wire, a printable form to reproduce it, and the ways its
// framing breaks HTTP/1.1 on purpose (then the HTTP layer may refuse it before any route sees it).

import { deterministicBytes } from '../../test/support/images.js';
import type { BodyContent, FuzzRequest } from './fuzz-requests.js';

export interface Wire {
  bytes: Buffer;
  /** Our side ends after sending: the body was announced longer than sent. */
  halfClose: boolean;
  /** Why HTTP/1.1 (as node's parser reads it) refuses this request; empty for a well-formed one. */
  malformed: string[];
  /** The request, exactly: the head as a JSON string, the body as text or as its generator. */
  printable: string;
}

/** Methods node's HTTP parser accepts among those generated. */
const PARSED_METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND']);
/** node's default --max-http-header-size. */
const MAX_HEADER_BYTES = 16 * 1024;
const CHUNK = 1000;

export function toWire(request: FuzzRequest, port: number): Wire {
  const malformed: string[] = [];
  if (!PARSED_METHODS.has(request.method)) malformed.push('method');
  if (request.version !== 'HTTP/1.1' && request.version !== 'HTTP/1.0') malformed.push('version');
  if (request.path === '' || !/^(?:\/|\*$|https?:\/\/)/.test(request.path)) malformed.push('request target form');
  // Outside visible ASCII: controls and spaces end the target, and RFC 3986 has no raw non-ASCII.
  if (/[^\x21-\x7e]/.test(request.path)) malformed.push('request target bytes');

  const headers: Array<[string, string]> = [];
  if (request.host.kind === 'own') headers.push(['Host', `127.0.0.1:${port}`]);
  else if (request.host.kind === 'value') {
    headers.push(['Host', request.host.value]);
    if (request.host.twice) {
      headers.push(['Host', `${request.host.value}x`]);
      malformed.push('two Host headers');
    }
  } else if (request.version === 'HTTP/1.1') malformed.push('no Host');
  headers.push(...request.headers);

  let body: Buffer = Buffer.alloc(0);
  let halfClose = false;
  if (request.body !== undefined) {
    const content = bodyBytes(request.body.content);
    switch (request.body.mode) {
      case 'exact':
        headers.push(['Content-Length', String(content.length)]);
        body = content;
        break;
      case 'short':
        headers.push(['Content-Length', String(Math.floor(content.length / 2))]);
        body = content;
        // What follows the declared body is a second request, most likely unparsable.
        malformed.push('bytes after the declared body');
        break;
      case 'long':
        headers.push(['Content-Length', String(content.length + 1 + (content.length % 997))]);
        body = content;
        halfClose = true;
        malformed.push('stream ends inside the body');
        break;
      case 'chunked':
        headers.push(['Transfer-Encoding', 'chunked']);
        body = chunked(content);
        break;
      case 'bad-chunked':
        headers.push(['Transfer-Encoding', 'chunked']);
        body = Buffer.concat([Buffer.from(`${content.length.toString(16)}zz\r\n`), content, Buffer.from('\r\n0\r\n\r\n')]);
        malformed.push('chunk size');
        break;
      case 'length-and-chunked':
        headers.push(['Content-Length', String(content.length)], ['Transfer-Encoding', 'chunked']);
        body = chunked(content);
        malformed.push('Content-Length with chunked');
        break;
      case 'bad-length':
        headers.push(...(content.length % 2 === 0 ? [['Content-Length', '-1'] as [string, string]] : [['Content-Length', String(content.length)] as [string, string], ['Content-Length', String(content.length + 1)] as [string, string]]));
        body = content;
        malformed.push('Content-Length');
        break;
    }
  }
  headers.push(['Connection', 'close']);

  // Header values may hold obs-text (bytes ≥ 0x80), never controls other than tab.
  if (headers.some(([, value]) => hasControl(value))) malformed.push('control character in a header');
  const head = `${request.method} ${request.path} ${request.version}\r\n${headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`;
  const headBytes = Buffer.from(head, 'utf8');
  if (headBytes.length > MAX_HEADER_BYTES) malformed.push('head larger than 16 KiB');
  return { bytes: Buffer.concat([headBytes, body]), halfClose, malformed, printable: printable(request, head) };
}

function hasControl(text: string): boolean {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) return true;
  }
  return false;
}

function bodyBytes(content: BodyContent): Buffer {
  return content.kind === 'text' ? Buffer.from(content.text, 'utf8') : deterministicBytes(content.size, content.seed);
}

function chunked(content: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let offset = 0; offset < content.length; offset += CHUNK) {
    const piece = content.subarray(offset, offset + CHUNK);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

function printable(request: FuzzRequest, head: string): string {
  const shownHead = head.length > 600 ? `${head.slice(0, 400)}…(${head.length} characters)…${head.slice(-150)}` : head;
  const content = request.body?.content;
  let body = '';
  if (content?.kind === 'text') body = ` body(${request.body?.mode}) ${JSON.stringify(content.text.length > 300 ? `${content.text.slice(0, 300)}…(${content.text.length} characters)` : content.text)}`;
  else if (content?.kind === 'bytes') body = ` body(${request.body?.mode}) ${content.size} bytes of deterministicBytes(${content.size}, ${content.seed})`;
  return `${request.target}: ${JSON.stringify(shownHead)}${body}`;
}
