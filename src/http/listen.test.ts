// Which failures of a listen on '::' mean "no IPv6 here" (then IPv4 alone is tried): only EAFNOSUPPORT and
// EADDRNOTAVAIL. Servers refused a port for real: test/listen-failure.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isIpv6Unavailable } from './listen.js';

describe('listen', () => {
  it('falls back to IPv4 only when IPv6 is unavailable', () => {
    for (const code of ['EAFNOSUPPORT', 'EADDRNOTAVAIL']) assert.equal(isIpv6Unavailable(Object.assign(new Error(code), { code })), true, code);
    for (const code of ['EADDRINUSE', 'EACCES', 'EPERM', 'EINVAL']) assert.equal(isIpv6Unavailable(Object.assign(new Error(code), { code })), false, code);
    assert.equal(isIpv6Unavailable(new Error('no code')), false);
  });
});
