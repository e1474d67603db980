// Users and their bcrypt password hashes from an htpasswd file (`htpasswd -B`), read again when the file
// changes (checked at most once a second). A check that succeeded is remembered for a minute, keyed by a hash
// of the name and password (never the password), so a client sending Basic credentials on every request pays
// bcrypt's cost once, not per request.

import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';

const RECHECK_FILE_MS = 1_000;
const REMEMBER_MS = 60_000;
const REMEMBER_MAX = 10_000;

export interface HtpasswdLog {
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Reads `name:hash` lines; hashes other than bcrypt ($2a$, $2b$, $2y$) are refused, with a warning naming the line. */
export function parseHtpasswd(text: string, warn: (line: number, reason: string) => void): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, index) => {
    if (line.trim() === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    if (colon <= 0) return warn(index + 1, 'not NAME:HASH');
    if (!/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) return warn(index + 1, `the hash of ${name} is not bcrypt (use htpasswd -B)`);
    users.set(name, hash);
  });
  return users;
}

export class HtpasswdFile {
  private users = new Map<string, string>();
  private loadedStamp = '';
  private checkedAt = Number.NEGATIVE_INFINITY;
  private readonly remembered = new Map<string, number>();

  private constructor(
    readonly file: string,
    private readonly log: HtpasswdLog,
  ) {}

  /** Reads the file; a file that cannot be read stops the start (a later failure keeps the last users). */
  static async open(file: string, log: HtpasswdLog): Promise<HtpasswdFile> {
    const htpasswd = new HtpasswdFile(file, log);
    await htpasswd.reload(true);
    return htpasswd;
  }

  /** Whether the name and password are right. */
  async verify(name: string, password: string): Promise<boolean> {
    await this.refresh();
    const key = createHash('sha256').update(name).update('\0').update(password).digest('base64');
    const until = this.remembered.get(key);
    if (until !== undefined && until > Date.now()) return true;
    const hash = this.users.get(name);
    // A name that does not exist costs the same as a wrong password: no timing tells names apart.
    const ok = await bcrypt.compare(password, hash ?? DUMMY_HASH);
    if (!ok || hash === undefined) return false;
    if (this.remembered.size >= REMEMBER_MAX) this.remembered.clear();
    this.remembered.set(key, Date.now() + REMEMBER_MS);
    return true;
  }

  private async refresh(): Promise<void> {
    if (Date.now() - this.checkedAt < RECHECK_FILE_MS) return;
    this.checkedAt = Date.now();
    await this.reload(false);
  }

  private async reload(first: boolean): Promise<void> {
    try {
      const info = await stat(this.file);
      const stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
      if (stamp === this.loadedStamp) return;
      const text = await readFile(this.file, 'utf8');
      this.users = parseHtpasswd(text, (line, reason) => this.log.warn({ file: this.file, line }, `htpasswd line ignored: ${reason}`));
      this.loadedStamp = stamp;
      // Someone removed or changed a password: what was remembered may no longer hold.
      this.remembered.clear();
    } catch (error) {
      if (first) throw error;
      this.log.error({ file: this.file, err: error }, 'cannot read the htpasswd file: keeping the users read before');
    }
  }
}

/** A bcrypt hash (cost 10, as htpasswd -B) of nothing anyone knows, for names that do not exist; made once, written here. */
const DUMMY_HASH = '$2b$10$17pbZxPcgl4HIRNOQy7Wv.7Y41vh4R46zJJMMcdOsH3utb.i0bCTi';
