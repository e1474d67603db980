import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccessRules, globToRegExp } from './access-rules.js';

describe('globToRegExp', () => {
  const cases: Array<[string, string[], string[]]> = [
    ['library/*', ['library/alpine'], ['library', 'library/a/b', 'other/alpine']],
    ['ghcr.io/org/**', ['ghcr.io/org/app', 'ghcr.io/org/a/b/c', 'ghcr.io/org'], ['ghcr.io/other/app', 'ghcr.io/organic/app']],
    ['**', ['a', 'a/b/c'], []],
    ['**/base', ['base', 'team/base', 'a/b/base'], ['team/base2']],
    ['team/app', ['team/app'], ['team/app2', 'team/apps/x']],
    ['team.x/*', ['team.x/a'], ['teamyx/a']],
  ];
  for (const [glob, matching, other] of cases) {
    it(glob, () => {
      const pattern = globToRegExp(glob);
      for (const name of matching) assert.ok(pattern.test(name), `${glob} matches ${name}`);
      for (const name of other) assert.ok(!pattern.test(name), `${glob} does not match ${name}`);
    });
  }
});

describe('AccessRules', () => {
  const rules = new AccessRules([
    { users: ['alice', 'ci-bot'], repositories: ['**'], actions: ['pull'] },
    { users: ['ci-bot'], repositories: ['team/**'], actions: ['push'] },
    { users: ['*'], repositories: ['public/*'], actions: ['pull'] },
    { users: ['anonymous'], repositories: ['library/*'], actions: ['pull'] },
    { users: ['root'], repositories: ['**'], actions: ['admin'] },
  ]);

  it('grants the union of the rules that apply', () => {
    assert.deepEqual([...rules.granted({ kind: 'user', name: 'ci-bot' }, 'team/app')].sort(), ['pull', 'push']);
    assert.deepEqual([...rules.granted({ kind: 'user', name: 'alice' }, 'team/app')], ['pull']);
  });

  it('applies * to any authenticated user and anonymous only to callers without credentials', () => {
    assert.deepEqual([...rules.granted({ kind: 'user', name: 'bob' }, 'public/x')], ['pull']);
    assert.deepEqual([...rules.granted({ kind: 'anonymous' }, 'public/x')], []);
    assert.deepEqual([...rules.granted({ kind: 'anonymous' }, 'library/alpine')], ['pull']);
    assert.deepEqual([...rules.granted({ kind: 'user', name: 'bob' }, 'library/alpine')], [], 'a user is not anonymous');
  });

  it('knows who is an admin', () => {
    assert.equal(rules.isAdmin({ kind: 'user', name: 'root' }), true);
    assert.equal(rules.isAdmin({ kind: 'user', name: 'alice' }), false);
    assert.equal(rules.isAdmin({ kind: 'anonymous' }), false);
  });
});
