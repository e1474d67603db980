// `regmirror verify`: a data directory checked against itself. Every content file is re-hashed against its
// name and its records, every record against its file, temporaries are found, and v1 layers are checked
// against their payload checksums. Repair only removes (file and records), so what was removed is fetched
// again; it never records what it cannot vouch for. One file at a time, read in chunks; records by the page.

import { DigestWriter, type Digest } from '../oci/digest.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { CONTENT_FOLDER, contentKey, digestOfContentKey, TEMPORARY_FOLDER, type V1Layout } from '../store/layout.js';
import type { ObjectStore } from '../store/object-store.js';
import { StorageError } from '../store/storage-error.js';
import { parseChecksumsFile, PayloadChecksum, verifiableChecksums } from '../v1/grammar.js';

const RECORD_PAGE = 1000;

export type ProblemKind =
  /** A content file whose bytes do not hash to its name. */
  | 'damaged'
  /** A file the disk would not read. */
  | 'unreadable'
  /** A content file whose record says another size. */
  | 'size-mismatch'
  /** A content file no record names (a crash between the rename and the record). */
  | 'orphan-file'
  /** A record whose file is gone. */
  | 'orphan-record'
  /** A file where content lives that is not named by a digest. */
  | 'stray-file'
  /** A temporary left by an earlier run. */
  | 'temporary'
  /** A v1 layer whose payload checksum is not one its image recorded. */
  | 'v1-layer-damaged';

export interface Problem {
  kind: ProblemKind;
  /** The key, digest or temporary concerned. */
  subject: string;
  detail: string;
  /** What repair did; absent when not repairing. */
  repaired?: string;
}

export interface VerifySummary {
  /** Content files hashed. */
  contentFiles: number;
  /** v1 layers hashed against their payload checksum. */
  v1Layers: number;
  /** v1 layers with nothing to check them against (no sha256 payload checksum recorded, or a push in progress). */
  v1Unverifiable: number;
  /** Bytes hashed, content and v1 layers. */
  bytes: number;
  /** Blob and manifest records checked. */
  records: number;
  problems: number;
  repaired: number;
}

export interface VerifyOptions {
  repair: boolean;
  /** Where v1 images live, when their layers are to be checked. */
  v1?: V1Layout | undefined;
  /** Told of each problem as it is found (and repaired). */
  onProblem(problem: Problem): void;
}

export async function verifyData(store: ObjectStore, meta: MetadataStore, options: VerifyOptions): Promise<VerifySummary> {
  const verifier = new Verifier(store, meta, options);
  return verifier.run();
}

class Verifier {
  private readonly summary: VerifySummary = { contentFiles: 0, v1Layers: 0, v1Unverifiable: 0, bytes: 0, records: 0, problems: 0, repaired: 0 };

  constructor(
    private readonly store: ObjectStore,
    private readonly meta: MetadataStore,
    private readonly options: VerifyOptions,
  ) {}

  async run(): Promise<VerifySummary> {
    await this.checkContent();
    await this.checkRecords();
    await this.checkTemporaries();
    if (this.options.v1 !== undefined) await this.checkV1Layers(this.options.v1);
    return this.summary;
  }

  private async checkContent(): Promise<void> {
    for await (const key of this.store.keys(CONTENT_FOLDER)) {
      const digest = digestOfContentKey(key);
      if (digest === undefined) {
        await this.report({ kind: 'stray-file', subject: key, detail: 'not named by a digest, where only content lives' }, async () => {
          await this.store.delete(key);
          return 'removed the file';
        });
        continue;
      }
      const hash = new DigestWriter();
      const size = await this.hash(key, hash, () => this.removeContent(digest));
      if (size === undefined) continue;
      this.summary.contentFiles += 1;
      const actual = hash.digest();
      if (actual !== digest) {
        await this.report({ kind: 'damaged', subject: key, detail: `its ${size} bytes hash to ${actual}` }, () => this.removeContent(digest));
        continue;
      }
      const records = [
        { kind: 'blob', record: await this.meta.getBlob(digest) },
        { kind: 'manifest', record: await this.meta.getManifest(digest) },
      ].filter((entry) => entry.record !== undefined);
      if (records.length === 0) {
        await this.report({ kind: 'orphan-file', subject: key, detail: `${size} bytes that no record names` }, async () => {
          await this.store.delete(key);
          return 'removed the file';
        });
        continue;
      }
      const wrong = records.filter((entry) => entry.record?.size !== size).map((entry) => `its ${entry.kind} record says ${entry.record?.size} bytes`);
      if (wrong.length > 0) {
        await this.report({ kind: 'size-mismatch', subject: key, detail: `${size} bytes, but ${wrong.join(' and ')}` }, () => this.removeContent(digest));
      }
    }
  }

  private async checkRecords(): Promise<void> {
    await this.eachPage(
      (page) => this.meta.listBlobs(page),
      async (record) => {
        if ((await this.store.stat(contentKey(record.digest))) !== undefined) return;
        await this.report({ kind: 'orphan-record', subject: record.digest, detail: `a blob record (${record.size} bytes) whose file is gone` }, async () => {
          await this.meta.deleteBlob(record.digest);
          return 'removed the record';
        });
      },
    );
    await this.eachPage(
      (page) => this.meta.listManifests(page),
      async (record) => {
        if ((await this.store.stat(contentKey(record.digest))) !== undefined) return;
        await this.report({ kind: 'orphan-record', subject: record.digest, detail: `a manifest record (${record.mediaType}) whose file is gone` }, async () => {
          await this.meta.deleteManifest(record.digest);
          return 'removed the record';
        });
      },
    );
  }

  /** Records a page at a time; removing the ones already seen does not move the next page. */
  private async eachPage<R extends { digest: Digest }>(list: (page: { last: string; limit: number }) => Promise<R[]>, check: (record: R) => Promise<void>): Promise<void> {
    for (let last = ''; ; ) {
      const page = await list({ last, limit: RECORD_PAGE });
      for (const record of page) {
        this.summary.records += 1;
        await check(record);
      }
      const final = page.at(-1);
      if (page.length < RECORD_PAGE || final === undefined) return;
      last = final.digest;
    }
  }

  private async checkTemporaries(): Promise<void> {
    const temporaries = await this.store.listTemporaries();
    // Nothing else uses the data directory while verify holds it: every temporary is a leftover.
    if (this.options.repair && temporaries.length > 0) await this.store.removeStaleTemporaries();
    for (const temporary of temporaries) {
      await this.report({ kind: 'temporary', subject: `${TEMPORARY_FOLDER}/${temporary.name}`, detail: `${temporary.size} bytes left by an earlier run` }, () =>
        Promise.resolve('removed the temporary'),
      );
    }
  }

  private async checkV1Layers(layout: V1Layout): Promise<void> {
    for await (const key of this.store.keys(layout.imagesFolder)) {
      const image = layout.imageOfKey(key);
      if (image?.file !== 'layer') continue;
      const { id } = image;
      // A push in progress has promised nothing yet; its client starts over.
      const inProgress = (await this.store.stat(layout.imageKey(id, '_inprogress'))) !== undefined;
      const recorded = inProgress ? undefined : await this.store.readBytes(layout.imageKey(id, '_checksum'));
      const expected = recorded === undefined ? [] : verifiableChecksums(parseChecksumsFile(recorded));
      const json = expected.length === 0 ? undefined : await this.store.readBytes(layout.imageKey(id, 'json'));
      if (json === undefined) {
        this.summary.v1Unverifiable += 1;
        continue;
      }
      const removeLayer = async (): Promise<string> => {
        await this.store.delete(key);
        return 'removed the layer';
      };
      const checksum = new PayloadChecksum(json);
      const size = await this.hash(key, checksum, removeLayer);
      if (size === undefined) continue;
      this.summary.v1Layers += 1;
      const actual = checksum.digest();
      if (!expected.includes(actual)) {
        await this.report({ kind: 'v1-layer-damaged', subject: key, detail: `its payload checksum is ${actual}, not ${expected.join(' or ')} as _checksum records` }, removeLayer);
      }
    }
  }

  /** Streams a file into a hash; its size, or undefined when it is gone (or unreadable, which is reported). */
  private async hash(key: string, into: { update(chunk: Uint8Array): void }, removeUnreadable: () => Promise<string>): Promise<number | undefined> {
    let size = 0;
    try {
      const body = await this.store.read(key);
      if (body === undefined) return undefined;
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        into.update(chunk);
        size += chunk.length;
      }
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
      await this.report({ kind: 'unreadable', subject: key, detail: `${error.message}${cause}` }, removeUnreadable);
      return undefined;
    } finally {
      this.summary.bytes += size;
    }
    return size;
  }

  private async removeContent(digest: Digest): Promise<string> {
    await this.store.delete(contentKey(digest));
    await this.meta.deleteBlob(digest);
    await this.meta.deleteManifest(digest);
    return 'removed the file and its records';
  }

  private async report(problem: Problem, repair: () => Promise<string>): Promise<void> {
    this.summary.problems += 1;
    if (this.options.repair) {
      problem.repaired = await repair();
      this.summary.repaired += 1;
    }
    this.options.onProblem(problem);
  }
}
