// Fills a small filesystem (a tmpfs the test mounted) to its last page, for tests of what happens on a full disk.

import { open } from 'node:fs/promises';
import { join } from 'node:path';

/** Writes files into dir until the filesystem has no page free; returns their paths (remove them to free it). */
export async function fillDisk(dir: string): Promise<string[]> {
  const files = [join(dir, 'filler'), join(dir, 'filler-tail')];
  // Big chunks first, then single pages for what the last big one could not take. Bounded: a 64 MiB tmpfs takes
  // at most 256 big chunks.
  await writeUntilFull(files[0] ?? '', 256 * 1024, 1000);
  await writeUntilFull(files[1] ?? '', 4096, 1000);
  return files;
}

async function writeUntilFull(file: string, chunkBytes: number, most: number): Promise<void> {
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(chunkBytes, 0x5a);
  try {
    for (let written = 0; written < most; written++) await handle.write(chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    await handle.close();
  }
}
