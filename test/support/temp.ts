// Throwaway directories for tests: one fresh directory under os.tmpdir() per call,
// removed recursively when the test is done with it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Creates a new empty directory named `${prefix}-XXXXXX` under os.tmpdir() and returns its absolute path. */
export async function makeTempDir(prefix: string): Promise<string> {
  const separated = /[-_.]$/.test(prefix) ? prefix : `${prefix}-`;
  return mkdtemp(join(tmpdir(), separated));
}

/** Removes dir and everything below it; a missing dir is fine. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
}
