// htpasswd files for distribution's basic auth: one bcrypt entry per user, made by apache2-utils'
// `htpasswd -Bbn` (distribution accepts only bcrypt).
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Writes path with a bcrypt `user:hash` line for every user (replacing any existing file). */
export async function writeHtpasswd(path: string, users: Record<string, string>): Promise<void> {
  const entries: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    const { stdout } = await execFileAsync('htpasswd', ['-Bbn', user, password], { timeout: 15_000, killSignal: 'SIGKILL' });
    const entry = stdout.trim();
    if (!entry.startsWith(`${user}:$2`)) throw new Error(`htpasswd -Bbn ${user}: unexpected output ${JSON.stringify(stdout)}`);
    entries.push(entry);
  }
  await writeFile(path, entries.map((entry) => `${entry}\n`).join(''), { mode: 0o600 });
}
