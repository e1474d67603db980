// The team's kit beside the checkout (../shared: the conformance suite, PostgreSQL and Swift scripts), used from
// there and never copied into the repository. REGMIRROR_SHARED_DIR names another place for it.

import { access } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPOSITORY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The absolute path of a part of the kit; throws, saying where it looked, when it is not there. */
export async function sharedKit(...parts: string[]): Promise<string> {
  const roots = [process.env.REGMIRROR_SHARED_DIR, path.join(REPOSITORY, '..', 'shared'), '/work/shared'].filter((root): root is string => root !== undefined && root !== '');
  for (const root of roots) {
    const candidate = path.join(root, ...parts);
    try {
      await access(candidate);
      return candidate;
    } catch {
      // not there
    }
  }
  throw new Error(`the team's kit (${path.join('shared', ...parts)}) is not in ${roots.join(', ')}: set REGMIRROR_SHARED_DIR`);
}
