// Table-driven tests of the v1 grammar: ids, tags, names, paths, checksums, JSON shapes, User-Agent facts.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { V1Error } from './errors.js';
import {
  checksumsFile,
  isImageId,
  isTag,
  matchesSearch,
  mergeIndexImages,
  mergeSearchResults,
  parseAncestry,
  parseChecksumHeader,
  parseChecksumsFile,
  parseImageJson,
  parseIndexImages,
  parseRepositoryName,
  parseSearchAnswer,
  parseTagList,
  parseV1Path,
  PayloadChecksum,
  pythonJson,
  tagJsonFromUserAgent,
  verifiableChecksums,
  type V1Route,
} from './grammar.js';

const ID64 = 'a'.repeat(63) + 'b';
const ID16 = '0123456789abcdef';

function v1ErrorOf(run: () => unknown): V1Error {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof V1Error, `a V1Error, not ${String(error)}`);
    return error;
  }
  assert.fail('expected a V1Error');
}

describe('v1 grammar', () => {
  describe('image ids', () => {
    const cases: Array<[string, boolean]> = [
      [ID64, true],
      [ID16, true],
      ['A'.repeat(64), false],
      ['a'.repeat(63), false],
      ['a'.repeat(65), false],
      ['a'.repeat(32), false],
      ['g'.repeat(64), false],
      ['', false],
      ['../../etc/passwd', false],
      [`${ID16}\n`, false],
    ];
    for (const [text, valid] of cases) {
      it(`${JSON.stringify(text.slice(0, 20))}… (${text.length}) is ${valid ? 'valid' : 'invalid'}`, () => assert.equal(isImageId(text), valid));
    }
  });

  describe('tags', () => {
    const cases: Array<[string, boolean]> = [
      ['latest', true],
      ['1.0', true],
      ['_x', true],
      ['V-1.2_rc', true],
      ['a'.repeat(128), true],
      ['a'.repeat(129), false],
      ['.hidden', false],
      ['-x', false],
      ['', false],
      ['a/b', false],
      ['a:b', false],
      ['é', false],
      ['..', false],
    ];
    for (const [text, valid] of cases) {
      it(`${JSON.stringify(text.slice(0, 20))} is ${valid ? 'valid' : 'invalid'}`, () => assert.equal(isTag(text), valid));
    }
  });

  describe('repository names', () => {
    const valid: Array<[string, string, string]> = [
      ['busybox', 'library', 'busybox'],
      ['library/busybox', 'library', 'busybox'],
      ['team/app', 'team', 'app'],
      ['my_team/app.v2-x', 'my_team', 'app.v2-x'],
      ['ab/c', 'ab', 'c'],
      ['team/..x', 'team', '..x'],
    ];
    for (const [text, namespace, repository] of valid) {
      it(`${text} is ${namespace}/${repository}`, () => assert.deepEqual(parseRepositoryName(text), { namespace, repository }));
    }
    const invalid = ['Team/app', 'team/App', 'a/app', 'team/..', 'team/.', '..', 'a/b/c', 'team/', '/app', 'te am/app', 'team/a%2Fb', 'x'.repeat(256) + '/a'];
    for (const text of invalid) {
      it(`${JSON.stringify(text.slice(0, 30))} is refused with 400`, () => {
        const error = v1ErrorOf(() => parseRepositoryName(text));
        assert.equal(error.status, 400);
        assert.equal(error.code, 'REPOSITORY_NAME_INVALID');
      });
    }
  });

  describe('paths', () => {
    const team = { namespace: 'team', repository: 'app' };
    const library = { namespace: 'library', repository: 'busybox' };
    const cases: Array<[string, V1Route | undefined]> = [
      ['/_ping', { kind: 'ping' }],
      ['/v1/_ping', { kind: 'ping' }],
      ['/v1/search', { kind: 'search' }],
      ['/v1/users', { kind: 'users' }],
      ['/v1/users/', { kind: 'users' }],
      ['/v1/users/alice/', { kind: 'user', username: 'alice' }],
      [`/v1/images/${ID64}/json`, { kind: 'image', id: ID64, resource: 'json' }],
      [`/v1/images/${ID16}/layer`, { kind: 'image', id: ID16, resource: 'layer' }],
      [`/v1/images/${ID64}/ancestry`, { kind: 'image', id: ID64, resource: 'ancestry' }],
      [`/v1/images/${ID64}/checksum`, { kind: 'image', id: ID64, resource: 'checksum' }],
      [`/v1/images/${ID64}/files`, undefined],
      ['/v1/repositories/team/app/', { kind: 'repository', name: team }],
      ['/v1/repositories/team/app', { kind: 'repository', name: team }],
      ['/v1/repositories/busybox/', { kind: 'repository', name: library }],
      ['/v1/repositories/busybox', { kind: 'repository', name: library }],
      ['/v1/repositories/team/app/tags', { kind: 'tags', name: team }],
      ['/v1/repositories/busybox/tags', { kind: 'tags', name: library }],
      ['/v1/repositories/team/app/tags/latest', { kind: 'tag', name: team, tag: 'latest' }],
      ['/v1/repositories/busybox/tags/1.0', { kind: 'tag', name: library, tag: '1.0' }],
      ['/v1/repositories/team/app/tags/.bad', { kind: 'tag', name: team, tag: '.bad' }],
      ['/v1/repositories/team/app/tags/latest/json', { kind: 'tag-json', name: team, tag: 'latest' }],
      ['/v1/repositories/team/app/json', { kind: 'repository-json', name: team }],
      ['/v1/repositories/team/app/properties', { kind: 'properties', name: team }],
      ['/v1/repositories/team/app/images', { kind: 'index-images', name: team }],
      ['/v1/repositories/team/app/auth', { kind: 'auth', name: team }],
      // The longer static suffix wins, as in werkzeug.
      ['/v1/repositories/team/tags/json', { kind: 'tag', name: { namespace: 'library', repository: 'team' }, tag: 'json' }],
      ['/v1/repositories/team/tags/v1/json', { kind: 'tag-json', name: { namespace: 'library', repository: 'team' }, tag: 'v1' }],
      ['/v1/repositories/team/app/tags/', undefined],
      ['/v1/repositories/team/app/unknown', undefined],
      ['/v1/repositories/', undefined],
      ['/v1/repositories//app/tags', undefined],
      ['/v1/repositories/a/b/c/tags', undefined],
      ['/v1/other', undefined],
      ['/v2/', undefined],
    ];
    for (const [path, route] of cases) {
      it(`${path} → ${route?.kind ?? 'unknown'}`, () => assert.deepEqual(parseV1Path(path), route));
    }

    const refused: Array<[string, number, string]> = [
      ['/v1/images/xyz/json', 404, 'Invalid image ID'],
      [`/v1/images/${ID64.toUpperCase()}/layer`, 404, 'Invalid image ID'],
      ['/v1/images/../layer', 404, 'Invalid image ID'],
      ['/v1/repositories/Team/app/tags', 400, 'Invalid namespace name (Team), only [a-z0-9-_] are allowed, size between 2 and 255'],
      ['/v1/repositories/team/../tags', 400, 'Invalid repository name (..), only [a-z0-9-_.] are allowed'],
      ['/v1/repositories/../tags', 400, 'Invalid repository name (..), only [a-z0-9-_.] are allowed'],
    ];
    for (const [path, status, message] of refused) {
      it(`${path} is refused: ${status} ${message}`, () => {
        const error = v1ErrorOf(() => parseV1Path(path));
        assert.equal(error.status, status);
        assert.equal(error.message, message);
      });
    }
  });

  describe('payload checksums', () => {
    it('hash the json, a newline and the layer, in any chunking', () => {
      const json = Buffer.from('{"id": "x"}');
      const layer = Buffer.from('layer bytes, in pieces');
      const expected = `sha256:${createHash('sha256').update(Buffer.concat([json, Buffer.from('\n'), layer])).digest('hex')}`;
      for (const size of [1, 3, layer.length]) {
        const checksum = new PayloadChecksum(json);
        for (let offset = 0; offset < layer.length; offset += size) checksum.update(layer.subarray(offset, offset + size));
        assert.equal(checksum.digest(), expected);
      }
      const empty = new PayloadChecksum(json);
      assert.equal(empty.digest(), `sha256:${createHash('sha256').update('{"id": "x"}\n').digest('hex')}`);
    });

    const sum = `sha256:${'c'.repeat(64)}`;
    const tarsum = `tarsum+sha256:${'d'.repeat(64)}`;
    const headers: Array<[string | string[] | undefined, string[]]> = [
      [undefined, []],
      ['', []],
      [sum, [sum]],
      [` ${sum} `, [sum]],
      [[sum, tarsum], [sum, tarsum]],
      [`${sum}, ${tarsum}`, [sum, tarsum]],
      ['sha256:short', []],
      ['md5:' + 'c'.repeat(64), ['md5:' + 'c'.repeat(64)]],
      ['garbage', []],
    ];
    for (const [value, expected] of headers) {
      it(`header ${JSON.stringify(value)} carries ${expected.length}`, () => assert.deepEqual(parseChecksumHeader(value), expected));
    }

    it('keep only plain sha256 ones as verifiable', () => assert.deepEqual(verifiableChecksums([tarsum, sum]), [sum]));

    it('are written as docker-registry wrote _checksum, and read back in its old formats too', () => {
      assert.equal(checksumsFile([sum]).toString(), `["${sum}"]`);
      assert.equal(checksumsFile([sum, tarsum]).toString(), `["${sum}", "${tarsum}"]`);
      assert.deepEqual(parseChecksumsFile(checksumsFile([sum, tarsum])), [sum, tarsum]);
      assert.deepEqual(parseChecksumsFile(Buffer.from(sum)), [sum]);
      assert.deepEqual(parseChecksumsFile(Buffer.from(`"${sum}"`)), [sum]);
      assert.deepEqual(parseChecksumsFile(Buffer.from('')), []);
    });
  });

  describe('Python JSON', () => {
    const cases: Array<[unknown, boolean, string]> = [
      [true, true, 'true'],
      ['OK', true, '"OK"'],
      [null, true, 'null'],
      [{ b: 1, a: [1, 'x'], c: { z: null, y: false } }, true, '{"a": [1, "x"], "b": 1, "c": {"y": false, "z": null}}'],
      [{ b: 1, a: 2 }, false, '{"b": 1, "a": 2}'],
      [{ name: 'é\u2603', ctl: '\n"' }, true, '{"ctl": "\\n\\"", "name": "\\u00e9\\u2603"}'],
      [[], true, '[]'],
      [{}, true, '{}'],
    ];
    for (const [value, sorted, expected] of cases) {
      it(`${expected}`, () => assert.equal(pythonJson(value, sorted), expected));
    }
  });

  describe('image json', () => {
    const ok: Array<[string, string | undefined]> = [
      [`{"id": "${ID64}"}`, undefined],
      [`{"id": "${ID64}", "parent": "${ID16}"}`, ID16],
      [`{"id": "${ID64}", "parent": ""}`, undefined],
      [`{"id": "${ID64}", "parent": null}`, undefined],
    ];
    for (const [text, parent] of ok) {
      it(`accepts ${text}`, () => assert.deepEqual(parseImageJson(Buffer.from(text), ID64), { id: ID64, parent }));
    }
    const refused: Array<[Buffer, string]> = [
      [Buffer.from('not json'), 'Invalid JSON'],
      [Buffer.from('{}'), 'Invalid JSON'],
      [Buffer.from('[1]'), 'Invalid JSON'],
      [Buffer.from('"x"'), 'Invalid JSON'],
      [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 'Invalid JSON'],
      [Buffer.from('{"parent": "x"}'), "Missing key `id' in JSON"],
      [Buffer.from(`{"id": "${ID16}"}`), 'JSON data contains invalid id'],
      [Buffer.from(`{"id": "${ID64}", "parent": "../x"}`), 'Image depends on a non existing parent'],
      [Buffer.from(`{"id": "${ID64}", "parent": 7}`), 'Image depends on a non existing parent'],
    ];
    for (const [bytes, message] of refused) {
      it(`refuses ${JSON.stringify(bytes.toString('latin1'))} with 400 ${message}`, () => {
        const error = v1ErrorOf(() => parseImageJson(bytes, ID64));
        assert.equal(error.status, 400);
        assert.equal(error.message, message);
      });
    }
  });

  describe('documents from a source', () => {
    it('ancestry: a list of ids starting with the image', () => {
      assert.deepEqual(parseAncestry(Buffer.from(`["${ID64}", "${ID16}"]`), ID64), [ID64, ID16]);
      assert.equal(parseAncestry(Buffer.from(`["${ID16}"]`), ID64), undefined);
      assert.equal(parseAncestry(Buffer.from(`["${ID64}", "x"]`), ID64), undefined);
      assert.equal(parseAncestry(Buffer.from(`{}`), ID64), undefined);
    });

    it('tag lists: tags to ids', () => {
      assert.deepEqual(parseTagList(Buffer.from(`{"latest": "${ID64}"}`)), { latest: ID64 });
      assert.deepEqual(parseTagList(Buffer.from('{}')), {});
      assert.equal(parseTagList(Buffer.from(`{".x": "${ID64}"}`)), undefined);
      assert.equal(parseTagList(Buffer.from('{"latest": "nope"}')), undefined);
      assert.equal(parseTagList(Buffer.from('[]')), undefined);
    });

    it('image lists: entries with an id', () => {
      assert.deepEqual(parseIndexImages(Buffer.from(`[{"id": "${ID64}", "checksum": "c", "Tag": "x"}, {"id": "${ID16}"}]`)), [
        { id: ID64, checksum: 'c' },
        { id: ID16 },
      ]);
      assert.equal(parseIndexImages(Buffer.from('[{"checksum": "c"}]')), undefined);
      assert.equal(parseIndexImages(Buffer.from('{}')), undefined);
    });

    it('merges pushed image lists as docker-registry did', () => {
      assert.deepEqual(
        mergeIndexImages(
          [{ id: 'a' }, { id: 'b', checksum: 'new' }, { id: 'c' }],
          [{ id: 'a', checksum: 'old' }, { id: 'b', checksum: 'older' }, { id: 'd' }],
        ),
        [{ id: 'a', checksum: 'old' }, { id: 'b', checksum: 'new' }, { id: 'c' }, { id: 'd' }],
      );
    });

    it('search answers and their merge', () => {
      assert.deepEqual(parseSearchAnswer(Buffer.from('{"query": "x", "num_results": 1, "results": [{"name": "a/b", "description": "d", "stars": 3}]}')), [
        { name: 'a/b', description: 'd', stars: 3 },
      ]);
      assert.equal(parseSearchAnswer(Buffer.from('{"results": [{"description": "d"}]}')), undefined);
      assert.equal(parseSearchAnswer(Buffer.from('[]')), undefined);
      const local = [
        { name: 'team/app', description: 'local' },
        { name: 'team/other', description: '' },
      ];
      const source = [
        { name: 'library/busybox', description: 'source' },
        { name: 'team/app', description: 'from the source' },
      ];
      assert.deepEqual(mergeSearchResults(local, source), [
        { name: 'team/app', description: 'from the source' },
        { name: 'team/other', description: '' },
        { name: 'library/busybox', description: 'source' },
      ]);
      assert.equal(matchesSearch({ name: 'team/App', description: null }, 'app'), true);
      assert.equal(matchesSearch({ name: 'x/y', description: 'An APP' }, 'app'), true);
      assert.equal(matchesSearch({ name: 'x/y', description: null }, 'app'), false);
      assert.equal(matchesSearch({ name: 'x/y', description: null }, ''), true);
    });
  });

  describe('tag json from the User-Agent', () => {
    const now = 1_700_000_000_500;
    const cases: Array<[string, Record<string, string | number>]> = [
      [
        'docker/1.3.2 go/go1.3.3 git-commit/39fa2fa kernel/3.16.0-4-AMD64 os/Linux arch/AMD64',
        { last_update: 1_700_000_000, docker_version: '1.3.2', docker_go_version: 'go1.3.3', arch: 'amd64', kernel: '3.16.0-4-amd64', os: 'linux' },
      ],
      ['curl/8.0', { last_update: 1_700_000_000 }],
      ['', { last_update: 1_700_000_000 }],
      ['docker/1.0 docker/1.1', { last_update: 1_700_000_000, docker_version: '1.1' }],
    ];
    for (const [userAgent, expected] of cases) {
      it(JSON.stringify(userAgent), () => assert.deepEqual(tagJsonFromUserAgent(userAgent, now), expected));
    }
  });
});
