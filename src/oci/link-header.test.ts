// Tests for reading the next page of a paged listing from its Link header.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextLinkTarget } from './link-header.js';

describe('nextLinkTarget', () => {
  const cases: Array<[string | undefined, string | undefined]> = [
    ['</v2/a/tags/list?n=2&last=b>; rel="next"', '/v2/a/tags/list?n=2&last=b'],
    ['<https://registry.example/v2/a/referrers/sha256:x?last=y>; rel=next', 'https://registry.example/v2/a/referrers/sha256:x?last=y'],
    ['  </v2/_catalog?last=a>  ;  REL="next"', '/v2/_catalog?last=a'],
    ['</v2/a/tags/list?last=b>; rel="prev"', undefined],
    ['/v2/a/tags/list?last=b; rel="next"', undefined],
    ['', undefined],
    [undefined, undefined],
  ];
  for (const [header, expected] of cases) {
    it(`${JSON.stringify(header)} → ${String(expected)}`, () => assert.equal(nextLinkTarget(header), expected));
  }
});
