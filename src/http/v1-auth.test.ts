import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseV1Path } from '../v1/grammar.js';
import { tokenSignature, v1Access, type V1Access } from './v1-auth.js';

const ID = 'a'.repeat(64);
const team = { namespace: 'team', repository: 'app' };
const library = { namespace: 'library', repository: 'base' };

describe('v1Access', () => {
  const cases: Array<[string, string, V1Access, V1Access?]> = [
    ['GET', '/v1/_ping', { kind: 'open' }],
    ['GET', '/_ping', { kind: 'open' }],
    ['GET', '/v1/search', { kind: 'listing' }],
    ['GET', '/v1/users/', { kind: 'login' }, { kind: 'open' }],
    ['POST', '/v1/users/', { kind: 'no-accounts', status: 401 }, { kind: 'open' }],
    ['PUT', '/v1/users/alice/', { kind: 'no-accounts', status: 403 }, { kind: 'open' }],
    ['GET', `/v1/images/${ID}/json`, { kind: 'image-read', id: ID }],
    ['GET', `/v1/images/${ID}/layer`, { kind: 'image-read', id: ID }],
    ['GET', `/v1/images/${ID}/ancestry`, { kind: 'image-read', id: ID }],
    ['GET', `/v1/images/${ID}/checksum`, { kind: 'open' }],
    ['PUT', `/v1/images/${ID}/json`, { kind: 'image-write', id: ID, resource: 'json' }],
    ['PUT', `/v1/images/${ID}/layer`, { kind: 'image-write', id: ID, resource: 'layer' }],
    ['PUT', `/v1/images/${ID}/checksum`, { kind: 'image-write', id: ID, resource: 'checksum' }],
    ['DELETE', `/v1/images/${ID}/json`, { kind: 'open' }],
    ['GET', '/v1/repositories/team/app/tags', { kind: 'repository', name: team, action: 'pull' }],
    ['DELETE', '/v1/repositories/team/app/tags', { kind: 'repository', name: team, action: 'delete' }],
    ['GET', '/v1/repositories/team/app/tags/v1', { kind: 'repository', name: team, action: 'pull' }],
    ['PUT', '/v1/repositories/team/app/tags/v1', { kind: 'repository', name: team, action: 'push' }],
    ['DELETE', '/v1/repositories/team/app/tags/v1', { kind: 'repository', name: team, action: 'delete' }],
    ['GET', '/v1/repositories/team/app/tags/v1/json', { kind: 'repository', name: team, action: 'pull' }],
    ['GET', '/v1/repositories/team/app/json', { kind: 'repository', name: team, action: 'pull' }],
    ['GET', '/v1/repositories/team/app/properties', { kind: 'repository', name: team, action: 'pull' }],
    ['PUT', '/v1/repositories/team/app/properties', { kind: 'repository', name: team, action: 'push' }],
    ['PUT', '/v1/repositories/team/app/', { kind: 'repository', name: team, action: 'push' }, { kind: 'open' }],
    ['DELETE', '/v1/repositories/team/app/', { kind: 'repository', name: team, action: 'delete' }, { kind: 'repository', name: team, action: 'delete' }],
    ['GET', '/v1/repositories/team/app/images', { kind: 'repository', name: team, action: 'pull' }, { kind: 'open' }],
    ['PUT', '/v1/repositories/team/app/images', { kind: 'repository', name: team, action: 'push' }, { kind: 'open' }],
    ['DELETE', '/v1/repositories/team/app/images', { kind: 'repository', name: team, action: 'delete' }, { kind: 'open' }],
    ['PUT', '/v1/repositories/team/app/auth', { kind: 'repository', name: team, action: 'pull' }, { kind: 'open' }],
    ['POST', '/v1/repositories/team/app/tags', { kind: 'open' }],
    // One-component names are library/NAME, as the rules see them.
    ['GET', '/v1/repositories/base/tags', { kind: 'repository', name: library, action: 'pull' }],
  ];
  for (const [method, path, standalone, registryOnly] of cases) {
    it(`${method} ${path}`, () => {
      const route = parseV1Path(path);
      assert.ok(route !== undefined);
      assert.deepEqual(v1Access(route, method, true), standalone);
      assert.deepEqual(v1Access(route, method, false), registryOnly ?? standalone, 'not standalone');
    });
  }
});

describe('tokenSignature', () => {
  it('reads the signature of the index token, with or without a second Token', () => {
    assert.equal(tokenSignature('signature=abc.def-_g,repository="team/app",access=read'), 'abc.def-_g');
    assert.equal(tokenSignature('Token signature=abc,repository="team/app",access=write'), 'abc');
    assert.equal(tokenSignature('repository="team/app",signature=xyz'), 'xyz');
  });

  it('finds none where there is none', () => {
    for (const value of ['', 'repository="team/app",access=read', 'signature=', 'mysignature=abc', '"signature=abc"']) assert.equal(tokenSignature(value), '', value);
  });
});
