// Tests for the address policy: which addresses are internal, which hosts are trusted, and what resolve() refuses.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPolicy, AddressRefusedError, isInternalAddress } from './address-policy.js';

describe('isInternalAddress', () => {
  const internal = [
    '127.0.0.1',
    '127.255.255.254',
    '10.9.8.7',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '::1',
    '::',
    'fc00::1',
    'fd12:3456::1',
    'fe80::1',
    '::ffff:127.0.0.1',
    '::ffff:10.0.0.1',
  ];
  const external = ['8.8.8.8', '93.184.216.34', '172.32.0.1', '100.128.0.1', '2606:4700::1111', '::ffff:8.8.8.8'];
  for (const address of internal) it(`${address} is internal`, () => assert.equal(isInternalAddress(address), true));
  for (const address of external) it(`${address} is not`, () => assert.equal(isInternalAddress(address), false));
  it('a host name is not an address', () => assert.equal(isInternalAddress('localhost'), false));
});

describe('AddressPolicy', () => {
  it('trusts the upstream itself and its trusted hosts, in any case, with or without brackets', () => {
    const policy = new AddressPolicy('Registry.Corp.Example', ['blobs.corp.example', '10.20.0.15', '[fd00::5]']);
    for (const host of ['registry.corp.example', 'BLOBS.corp.example', '10.20.0.15', 'fd00::5', '[fd00::5]', 'registry.corp.example.']) {
      assert.equal(policy.trusts(host), true, host);
    }
    assert.equal(policy.trusts('other.corp.example'), false);
  });

  it('connects to a trusted host as named, refuses an internal address, passes a public one', async () => {
    const policy = new AddressPolicy('127.0.0.1', ['blobs.internal']);
    assert.equal(await policy.resolve('127.0.0.1'), '127.0.0.1', 'the upstream itself, any port');
    assert.equal(await policy.resolve('blobs.internal'), 'blobs.internal', 'trusted: left to the resolver');
    assert.equal(await policy.resolve('93.184.216.34'), '93.184.216.34');
    for (const host of ['127.0.0.2', '10.0.0.1', '169.254.169.254', '[::1]', 'localhost']) {
      await assert.rejects(policy.resolve(host), AddressRefusedError, host);
    }
  });

  it('names no address in what it tells a client', async () => {
    const policy = new AddressPolicy('registry.example', []);
    await assert.rejects(policy.resolve('10.1.2.3'), (error: unknown) => error instanceof AddressRefusedError && !error.message.includes('10.1.2.3'));
  });
});
