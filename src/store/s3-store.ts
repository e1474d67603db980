// The s3 ObjectStore: content as objects of an S3 bucket (keys as layout.ts names them, under an optional prefix).
// A writer whose key is known at the start streams into a multipart upload as the bytes arrive (each part read
// back from its local spool, which followers read too) and completes it only on commit, after the caller verified
// the content: an object is visible only complete and checked, and an abort leaves no upload behind.

import path from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { pageLimit, type ByteRange, type KeyPage, type ObjectStat, type ObjectStore, type TemporaryInfo } from './object-store.js';
import type { SpoolFile } from './spool-file.js';
import { SpooledWriter } from './spooled-writer.js';
import { StorageError, systemErrorCode } from './storage-error.js';
import { TemporaryFolder } from './temporary-folder.js';

export interface S3StoreSettings {
  bucket: string;
  region: string;
  /** undefined: AWS's own endpoint for the region. */
  endpoint: string | undefined;
  /** Path-style URLs (endpoint/bucket/key), as most S3-compatible servers want. */
  forcePathStyle: boolean;
  /** '' or a folder ending in '/': every key of the store is below it. */
  prefix: string;
  /** undefined: the SDK's default chain (AWS_* variables, profiles, instance roles). */
  credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** The most one attempt of a request may take until the answer starts, and the longest a transfer may stall. */
  requestTimeoutMs: number;
  /** How long a presigned URL of redirectUrl() works; undefined: no redirects (storage.s3.redirect off). */
  redirectTtlMs: number | undefined;
}

export interface S3StoreTuning {
  /** Bytes per part of a multipart upload (S3's minimum: 5 MiB but for the last); smaller content is one PutObject. */
  partBytes?: number;
  /** Parts one writer uploads at once. */
  partsAtOnce?: number;
}

/** 8 MiB parts, twice as large every PARTS_PER_SIZE parts: S3's 10,000 parts then hold 7.9 TiB (78 GiB if all were 8 MiB). */
const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
const MAX_PARTS = 10_000;
const PARTS_PER_SIZE = 1_000;
/** Attempts at one part (each with the part read afresh from the spool: a stream cannot be sent twice). */
const PART_ATTEMPTS = 3;
const DEFAULT_PARTS_AT_ONCE = 2;
/** The metadata that carries when an object was written, to the millisecond (S3's Last-Modified has seconds). */
const WRITTEN_AT = 'regmirror-written';
/** The name of an unfinished multipart upload among the temporaries: this, then its key and id in base64url. */
const UPLOAD_TEMPORARY = 'upload.';
const SPOOL_READ_BYTES = 1024 * 1024;
/** Connections to the S3 endpoint at once. */
const MAX_CONNECTIONS = 1024;

export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly root: string;
  private readonly temporaries: TemporaryFolder;
  private readonly redirectTtlMs: number | undefined;

  /** temporaryDir: the local folder for spools (the data directory's tmp/). */
  constructor(
    settings: S3StoreSettings,
    temporaryDir: string,
    private readonly tuning: S3StoreTuning = {},
  ) {
    this.bucket = settings.bucket;
    this.root = settings.prefix;
    this.redirectTtlMs = settings.redirectTtlMs;
    this.temporaries = new TemporaryFolder(temporaryDir);
    this.client = new S3Client({
      region: settings.region,
      ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
      forcePathStyle: settings.forcePathStyle,
      ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
      // S3-compatible servers reject or mangle the SDK's default aws-chunked checksummed uploads.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      retryMode: 'standard',
      maxAttempts: 3,
      requestHandler: {
        connectionTimeout: settings.requestTimeoutMs,
        requestTimeout: settings.requestTimeoutMs,
        throwOnRequestTimeout: true,
        socketTimeout: settings.requestTimeoutMs,
        // A blob streamed to a slow client holds its connection for as long: with the SDK's 50, a few dozen such
        // responses would queue every other request (a HEAD of each hit) behind them until its deadline.
        httpAgent: { keepAlive: true, maxSockets: MAX_CONNECTIONS },
        httpsAgent: { keepAlive: true, maxSockets: MAX_CONNECTIONS },
      },
    });
  }

  /** Makes the spool folder and checks that the bucket is there and answers these credentials. */
  async init(): Promise<void> {
    await this.temporaries.init();
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      const status = statusOf(error);
      const reason = status === 404 ? 'NoSuchBucket' : status === 403 ? 'AccessDenied' : undefined;
      throw s3Failure('open bucket', this.bucket, error, reason);
    }
  }

  close(): void {
    this.client.destroy();
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return { size: head.ContentLength ?? 0, modifiedAt: writtenAt(head.Metadata, head.LastModified) };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw s3Failure('stat', key, error);
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable | undefined> {
    let output: GetObjectCommandOutput;
    try {
      output = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }) }),
      );
    } catch (error) {
      if (isMissing(error)) return undefined;
      // A range that starts past the end reads nothing, as a file read there does.
      if (range !== undefined && statusOf(error) === 416) return Readable.from([]);
      throw s3Failure('read', key, error);
    }
    if (!(output.Body instanceof Readable)) throw new StorageError('read', key, new Error('the S3 client returned no Node stream'));
    return new S3BodyStream(output.Body, output.ContentLength, key);
  }

  async readBytes(key: string): Promise<Buffer | undefined> {
    const stream = await this.read(key);
    if (stream === undefined) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async putBytes(key: string, bytes: Uint8Array): Promise<void> {
    try {
      // One PutObject: S3 makes it visible whole or not at all.
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), Body: bytes, ContentLength: bytes.length, Metadata: writtenNow() }),
      );
    } catch (error) {
      throw s3Failure('write', key, error);
    }
  }

  /**
   * With key: parts go up while the content streams in, and the commit completes the upload (or, for content
   * smaller than a part, is one PutObject). Without it, or committed elsewhere, the commit uploads the spool whole.
   */
  async createWriter(key?: string): Promise<SpooledWriter> {
    const spool = await this.temporaries.createSpool();
    return new S3ObjectWriter(spool, key, {
      client: this.client,
      bucket: this.bucket,
      objectKey: (stored) => this.objectKey(stored),
      partBytes: Math.max(this.tuning.partBytes ?? DEFAULT_PART_BYTES, 1),
      partsAtOnce: Math.max(this.tuning.partsAtOnce ?? DEFAULT_PARTS_AT_ONCE, 1),
      uploadWhole: (whole, stored) => this.uploadWhole(whole, stored),
      checkStored: (stored, size) => this.checkStored(stored, size),
      spoolWritten: (whole) => this.temporaries.remove(path.basename(whole.path)),
      abortUpload: (upload) => this.abortUpload(upload),
    });
  }

  /**
   * Uploads a spool whole (one PutObject, or a multipart upload completed only once every part is in), then
   * checks the size the bucket holds. On failure the multipart upload is aborted: nothing partial is visible.
   */
  private async uploadWhole(spool: SpoolFile, key: string): Promise<void> {
    const size = spool.size;
    const partSize = Math.max(this.tuning.partBytes ?? DEFAULT_PART_BYTES, Math.ceil(size / MAX_PARTS));
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.objectKey(key), Body: spoolContent(spool, 0, size), ContentLength: size, Metadata: writtenNow() },
      partSize,
      queueSize: this.tuning.partsAtOnce ?? DEFAULT_PARTS_AT_ONCE,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (error) {
      throw s3Failure('commit', key, error);
    }
  }

  /** Checks that the bucket holds size bytes under key; deletes what it holds otherwise. */
  private async checkStored(key: string, size: number): Promise<void> {
    const stored = await this.stat(key);
    if (stored?.size !== size) {
      await this.delete(key);
      throw new StorageError('commit', key, new Error(`the bucket holds ${stored?.size ?? 'no'} bytes of the ${size} uploaded`), 'SIZE_MISMATCH');
    }
  }

  /**
   * A presigned GetObject URL of the object, working for redirectTtlMs (computed here, no request), when redirects
   * are on. It points at the endpoint this store uses: the clients sent there must reach it.
   */
  async redirectUrl(key: string): Promise<string | undefined> {
    if (this.redirectTtlMs === undefined) return undefined;
    try {
      const command = new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) });
      return await getSignedUrl(this.client, command, { expiresIn: Math.max(1, Math.round(this.redirectTtlMs / 1000)) });
    } catch (error) {
      throw s3Failure('presign', key, error);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (error) {
      if (isMissing(error)) return;
      throw s3Failure('delete', key, error);
    }
  }

  /** One ListObjectsV2 (S3 lists in lexical order and starts after a key itself). */
  async listPage(prefix: string, page: { after?: string | undefined; limit: number }): Promise<KeyPage> {
    const limit = pageLimit(page.limit);
    const folder = prefix.replace(/\/+$/, '');
    let listed;
    try {
      listed = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.objectKey(folder === '' ? '' : `${folder}/`),
          MaxKeys: limit,
          ...(page.after === undefined ? {} : { StartAfter: this.objectKey(page.after) }),
        }),
      );
    } catch (error) {
      throw s3Failure('list', folder, error);
    }
    const objects = (listed.Contents ?? []).flatMap((object) => (object.Key === undefined ? [] : [object.Key.slice(this.root.length)]));
    const last = objects.at(-1);
    // A key ending in '/' is a folder marker some tools write, not content (the next page still starts after it).
    return { keys: objects.filter((key) => !key.endsWith('/')), next: listed.IsTruncated === true ? last : undefined };
  }

  /** Page by page (1,000 keys each): a walk over millions of objects holds one page. */
  async *keys(prefix: string): AsyncGenerator<string> {
    const folder = prefix.replace(/\/+$/, '');
    const listed = this.objectKey(folder === '' ? '' : `${folder}/`);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listed, ...(token === undefined ? {} : { ContinuationToken: token }) }));
      } catch (error) {
        throw s3Failure('list', folder, error);
      }
      for (const object of page.Contents ?? []) {
        // A key ending in '/' is a folder marker some tools write, not content.
        if (object.Key !== undefined && !object.Key.endsWith('/')) yield object.Key.slice(this.root.length);
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** The local spools, and the multipart uploads under the prefix that were never completed nor aborted (a crash's). */
  async listTemporaries(): Promise<TemporaryInfo[]> {
    const temporaries = await this.temporaries.list();
    for await (const upload of this.unfinishedUploads()) {
      const parts = await this.partsOf(upload);
      temporaries.push({ name: uploadName(upload), size: parts.size, modifiedAt: Math.max(upload.initiatedAt, parts.lastWrittenAt) });
    }
    return temporaries;
  }

  /**
   * The local spools and every unfinished multipart upload under the prefix: at start, when this process holds
   * the data directory. Another node writing under the same prefix would lose its uploads in progress.
   */
  async removeStaleTemporaries(): Promise<number> {
    let removed = await this.temporaries.removeAll();
    for await (const upload of this.unfinishedUploads()) {
      await this.abortUpload(upload);
      removed += 1;
    }
    return removed;
  }

  async removeTemporary(name: string): Promise<void> {
    const upload = uploadOfName(name);
    if (upload === undefined) await this.temporaries.remove(name);
    else await this.abortUpload(upload);
  }

  private objectKey(key: string): string {
    return `${this.root}${key}`;
  }

  private async *unfinishedUploads(): AsyncGenerator<UnfinishedUpload> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.root,
            ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
            ...(uploadIdMarker === undefined ? {} : { UploadIdMarker: uploadIdMarker }),
          }),
        );
      } catch (error) {
        throw s3Failure('list uploads', this.root, error);
      }
      for (const upload of page.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined) continue;
        yield { key: upload.Key.slice(this.root.length), uploadId: upload.UploadId, initiatedAt: upload.Initiated?.getTime() ?? 0 };
      }
      if (page.IsTruncated !== true) return;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /** What an unfinished upload holds so far, and when its last part was written. */
  private async partsOf(upload: UnfinishedUpload): Promise<{ size: number; lastWrittenAt: number }> {
    let size = 0;
    let lastWrittenAt = 0;
    let marker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListPartsCommand({ Bucket: this.bucket, Key: this.objectKey(upload.key), UploadId: upload.uploadId, ...(marker === undefined ? {} : { PartNumberMarker: marker }) }),
        );
      } catch (error) {
        // Completed or aborted since it was listed: nothing left of it.
        if (statusOf(error) === 404) return { size, lastWrittenAt };
        throw s3Failure('list parts', upload.key, error);
      }
      for (const part of page.Parts ?? []) {
        size += part.Size ?? 0;
        lastWrittenAt = Math.max(lastWrittenAt, part.LastModified?.getTime() ?? 0);
      }
      if (page.IsTruncated !== true || page.NextPartNumberMarker === undefined) return { size, lastWrittenAt };
      marker = page.NextPartNumberMarker;
    }
  }

  private async abortUpload(upload: Pick<UnfinishedUpload, 'key' | 'uploadId'>): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.objectKey(upload.key), UploadId: upload.uploadId }));
    } catch (error) {
      if (statusOf(error) === 404) return;
      throw s3Failure('abort upload', upload.key, error);
    }
  }
}

/** What a writer needs of its store. */
interface WriterContext {
  client: S3Client;
  bucket: string;
  objectKey(key: string): string;
  partBytes: number;
  partsAtOnce: number;
  uploadWhole(spool: SpoolFile, key: string): Promise<void>;
  checkStored(key: string, size: number): Promise<void>;
  /** The content is in the bucket: the local file goes (its handle stays readable for readers still following). */
  spoolWritten(spool: SpoolFile): Promise<void>;
  abortUpload(upload: Pick<UnfinishedUpload, 'key' | 'uploadId'>): Promise<void>;
}

/**
 * Appends go to the local spool; each part that fills up is uploaded from it at once (partsAtOnce at a time),
 * under a multipart upload started with the first part. commit uploads the rest as the last part and completes
 * the upload; abort (or a failed commit) waits for the parts in flight and aborts it.
 */
class S3ObjectWriter extends SpooledWriter {
  private uploadId: Promise<string> | undefined;
  private readonly parts: CompletedPart[] = [];
  /** Where the next part starts in the content, and its number. */
  private nextStart = 0;
  private nextNumber = 1;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: StorageError | undefined;
  /** Set by commit: what is left goes up as the last part, however small. */
  private finishing = false;

  constructor(
    spool: SpoolFile,
    /** Where the content is meant to go; undefined: unknown yet, nothing goes up before commit. */
    private readonly key: string | undefined,
    private readonly context: WriterContext,
  ) {
    super(spool);
  }

  protected override appended(): void {
    this.schedule();
  }

  protected async publish(key: string): Promise<void> {
    const size = this.spool.size;
    if (key !== this.key || this.uploadId === undefined) {
      // Smaller than a part (nothing went up yet), or committed elsewhere than announced: one upload of it all.
      await this.undo();
      await this.context.uploadWhole(this.spool, key);
    } else {
      this.finishing = true;
      this.schedule();
      await this.settled();
      if (this.failure !== undefined) throw this.failure;
      if (this.nextStart !== size) throw new StorageError('commit', key, new Error(`parts cover ${this.nextStart} of ${size} bytes`));
      const uploadId = await this.uploadId;
      try {
        await this.context.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.context.bucket,
            Key: this.context.objectKey(key),
            UploadId: uploadId,
            MultipartUpload: { Parts: [...this.parts].sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0)) },
          }),
        );
      } catch (error) {
        throw s3Failure('commit', key, error);
      }
    }
    await this.context.checkStored(key, size);
    await this.context.spoolWritten(this.spool);
  }

  /** Waits for the parts in flight, then aborts the upload (idempotent; an upload already completed is left). */
  protected async undo(): Promise<void> {
    await this.settled();
    const started = this.uploadId;
    this.uploadId = undefined;
    if (started === undefined || this.key === undefined) return;
    const uploadId = await started.catch(() => undefined);
    if (uploadId !== undefined) await this.context.abortUpload({ key: this.key, uploadId });
  }

  /** Starts the parts that are ready, up to partsAtOnce in flight. */
  private schedule(): void {
    if (this.key === undefined) return;
    while (this.failure === undefined && (this.state === 'writing' || this.state === 'committing') && this.inFlight.size < this.context.partsAtOnce) {
      const available = this.spool.size - this.nextStart;
      const partSize = this.context.partBytes * 2 ** Math.floor((this.nextNumber - 1) / PARTS_PER_SIZE);
      if (available <= 0 || (available < partSize && !this.finishing)) return;
      if (this.nextNumber > MAX_PARTS) {
        this.failure = new StorageError('write', this.key, new Error(`more than the ${MAX_PARTS} parts S3 takes`), 'EFBIG');
        return;
      }
      const length = Math.min(available, partSize);
      this.startPart(this.key, this.nextNumber, this.nextStart, length);
      this.nextStart += length;
      this.nextNumber += 1;
    }
  }

  /** Never rejects: a failure is kept for the commit. */
  private startPart(key: string, number: number, start: number, length: number): void {
    const task: Promise<void> = this.uploadPart(key, number, start, length)
      .then(
        (etag) => {
          this.parts.push({ PartNumber: number, ETag: etag });
        },
        (error: unknown) => {
          this.failure ??= s3Failure('upload part', key, error);
        },
      )
      .finally(() => {
        this.inFlight.delete(task);
        this.schedule();
      });
    this.inFlight.add(task);
  }

  private async uploadPart(key: string, number: number, start: number, length: number): Promise<string> {
    this.uploadId ??= this.createUpload(key);
    const uploadId = await this.uploadId;
    let lastError: unknown;
    for (let attempt = 1; attempt <= PART_ATTEMPTS && this.state !== 'aborted'; attempt += 1) {
      try {
        const output = await this.context.client.send(
          new UploadPartCommand({
            Bucket: this.context.bucket,
            Key: this.context.objectKey(key),
            UploadId: uploadId,
            PartNumber: number,
            Body: spoolContent(this.spool, start, length),
            ContentLength: length,
          }),
        );
        if (output.ETag === undefined) throw new Error(`the bucket returned no ETag for part ${number}`);
        return output.ETag;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError instanceof Error ? lastError : new Error(lastError === undefined ? 'the writer was aborted' : `part ${number} failed`, { cause: lastError });
  }

  private async createUpload(key: string): Promise<string> {
    const output = await this.context.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.context.bucket, Key: this.context.objectKey(key), Metadata: writtenNow() }),
    );
    if (output.UploadId === undefined) throw new Error('the bucket returned no upload id');
    return output.UploadId;
  }

  private async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
  }
}

interface UnfinishedUpload {
  /** Without the store's prefix. */
  key: string;
  uploadId: string;
  initiatedAt: number;
}

function uploadName(upload: UnfinishedUpload): string {
  return `${UPLOAD_TEMPORARY}${Buffer.from(upload.key).toString('base64url')}.${Buffer.from(upload.uploadId).toString('base64url')}`;
}

function uploadOfName(name: string): Pick<UnfinishedUpload, 'key' | 'uploadId'> | undefined {
  const match = /^upload\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(name);
  if (match === null) return undefined;
  return { key: Buffer.from(match[1] ?? '', 'base64url').toString(), uploadId: Buffer.from(match[2] ?? '', 'base64url').toString() };
}

function writtenNow(): Record<string, string> {
  return { [WRITTEN_AT]: String(Date.now()) };
}

function writtenAt(metadata: Record<string, string> | undefined, lastModified: Date | undefined): number {
  const written = Number(metadata?.[WRITTEN_AT]);
  return Number.isFinite(written) && written > 0 ? written : (lastModified?.getTime() ?? 0);
}

/** length bytes of the spool from start, read through its own handle; fails (so the upload fails) if the file holds fewer. */
function spoolContent(spool: SpoolFile, start: number, length: number): Readable {
  const size = start + length;
  let position = start;
  return new Readable({
    highWaterMark: SPOOL_READ_BYTES,
    read(): void {
      if (position >= size) {
        this.push(null);
        return;
      }
      spool.readAt(position, Math.min(SPOOL_READ_BYTES, size - position)).then(
        (chunk) => {
          if (chunk.length === 0) {
            this.destroy(new Error(`the spool ends at ${position} of its ${size} bytes`));
            return;
          }
          position += chunk.length;
          this.push(chunk);
        },
        (error: unknown) => this.destroy(error as Error),
      );
    },
  });
}

/**
 * An object's body as the store hands it out: failures of the transfer become StorageErrors, a body shorter
 * than the length announced fails instead of ending, and destroying it closes the connection.
 */
class S3BodyStream extends Readable {
  private received = 0;

  constructor(
    private readonly body: Readable,
    private readonly expected: number | undefined,
    private readonly key: string,
  ) {
    super({ highWaterMark: SPOOL_READ_BYTES });
    // Unlike a file, the connection can fail before anyone reads (a stall past the deadline, the server gone) while
    // the caller is still between awaits: the failure is kept (errored) for its reader instead of crashing the process.
    this.on('error', () => undefined);
    body.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (!this.push(chunk)) body.pause();
    });
    body.once('end', () => {
      if (this.expected !== undefined && this.received !== this.expected) {
        this.destroy(new StorageError('read', this.key, new Error(`the bucket sent ${this.received} of ${this.expected} bytes`), 'SHORT_READ'));
      } else {
        this.push(null);
      }
    });
    body.on('error', (error) => this.destroy(s3Failure('read', this.key, error)));
    body.once('close', () => {
      if (!body.readableEnded && !this.destroyed) this.destroy(new StorageError('read', this.key, new Error('the connection to the bucket closed early'), 'ECONNRESET'));
    });
    body.pause();
  }

  override _read(): void {
    this.body.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.body.destroy();
    callback(error);
  }
}

function statusOf(error: unknown): number | undefined {
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } } | undefined)?.$metadata;
  return typeof metadata?.httpStatusCode === 'number' ? metadata.httpStatusCode : undefined;
}

function nameOf(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** The key is not there (and not: the bucket is not there, which is a failure). */
function isMissing(error: unknown): boolean {
  const name = nameOf(error);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(error) === 404;
}

/**
 * What an S3 call threw, as a StorageError naming the operation and key. The SDK's error carries what the
 * server said back (the access key id, the string it signed): the cause keeps only its name, status and message.
 */
function s3Failure(operation: string, key: string, error: unknown, code?: string): StorageError {
  if (error instanceof StorageError) return error;
  const status = statusOf(error);
  const name = nameOf(error) ?? 'Error';
  const systemCode = systemErrorCode(error);
  const ownCode = (error as { code?: unknown } | undefined)?.code;
  const cause =
    systemCode !== undefined
      ? error
      : new Error(`${name}${status === undefined ? '' : ` (HTTP ${status})`}: ${error instanceof Error ? error.message : String(error)}`);
  const reported = code ?? systemCode ?? (typeof ownCode === 'string' ? ownCode : undefined) ?? (status === undefined || name !== 'Unknown' ? name : `HTTP ${status}`);
  return new StorageError(operation, key, cause, reported);
}
