// Who may do what, by repository: rules of users, repository globs and actions, granting only (no rule
// denies). Globs are over the names the catalog shows (the default upstream's repositories bare, any other's
// under its registry name): `*` within one path component, `**` across any number of them.

export type Action = 'pull' | 'push' | 'delete' | 'admin';
export const ACTIONS: readonly Action[] = ['pull', 'push', 'delete', 'admin'];

/** A caller: a user (htpasswd name or token subject), or nobody. */
export type Identity = { kind: 'anonymous' } | { kind: 'user'; name: string };

export interface AccessRule {
  /** Names; `*`: any authenticated user; `anonymous`: callers with no credentials. */
  users: readonly string[];
  repositories: readonly string[];
  actions: readonly Action[];
}

export class AccessRules {
  private readonly rules: Array<{ users: ReadonlySet<string>; patterns: RegExp[]; actions: ReadonlySet<Action> }>;

  constructor(rules: readonly AccessRule[]) {
    this.rules = rules.map((rule) => ({ users: new Set(rule.users), patterns: rule.repositories.map(globToRegExp), actions: new Set(rule.actions) }));
  }

  /** The actions the rules grant this caller on a repository (by its catalog name). */
  granted(identity: Identity, repository: string): Set<Action> {
    const granted = new Set<Action>();
    for (const rule of this.rules) {
      if (!appliesTo(rule.users, identity)) continue;
      if (!rule.patterns.some((pattern) => pattern.test(repository))) continue;
      for (const action of rule.actions) granted.add(action);
    }
    return granted;
  }

  /** Whether any rule grants the caller `admin` (for /metrics and /_regmirror/*). */
  isAdmin(identity: Identity): boolean {
    return this.rules.some((rule) => rule.actions.has('admin') && appliesTo(rule.users, identity));
  }
}

function appliesTo(users: ReadonlySet<string>, identity: Identity): boolean {
  if (identity.kind === 'anonymous') return users.has('anonymous');
  return users.has('*') || users.has(identity.name);
}

export function globToRegExp(glob: string): RegExp {
  let pattern = '';
  for (let index = 0; index < glob.length; index++) {
    const char = glob.charAt(index);
    if (char === '*' && glob.charAt(index + 1) === '*') {
      // `a/**` also matches `a` itself; `**/b` matches `b`.
      const slashAfter = glob.charAt(index + 2) === '/';
      pattern += slashAfter ? '(?:.*/)?' : '.*';
      index += slashAfter ? 2 : 1;
    } else if (char === '*') {
      pattern += '[^/]*';
    } else {
      pattern += char.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
    }
  }
  pattern = pattern.replace(/\/\.\*$/, '(?:/.*)?');
  return new RegExp(`^${pattern}$`);
}
