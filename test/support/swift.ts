// OpenStack Swift with its S3 API on loopback, for the s3 store's tests: started by ../shared/testing/swift-start.sh
// in a temporary directory on five free consecutive ports, stopped by swift-stop.sh, killed if the test process dies.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { sharedKit } from './shared-kit.js';
import { makeTempDir, removeDir } from './temp.js';

/** swift-start.sh's fixed account: tempauth's test:tester. */
export const SWIFT_ACCESS_KEY = 'test:tester';
export const SWIFT_SECRET_KEY = 'testing';
export const SWIFT_REGION = 'us-east-1';

export interface Swift {
  /** http://127.0.0.1:PORT, path-style. */
  endpoint: string;
  dir: string;
  /** A client of this Swift with the test account (path-style, checksums only when required). */
  client(): S3Client;
  createBucket(name: string): Promise<void>;
  /** Stops the servers, keeping what they stored. */
  stop(): Promise<void>;
  /** SIGKILL to every server at once: connections in progress are cut. */
  kill(): Promise<void>;
  /** Starts them again after stop(), on the same ports and data. */
  start(): Promise<void>;
  /** stop(), then removes the directory. */
  destroy(): Promise<void>;
}

const started = new Set<string>();
let exitHookInstalled = false;

/** SIGKILL to the servers swift-start.sh recorded in dir. */
function killServers(dir: string): void {
  let pids: string[];
  try {
    pids = readFileSync(path.join(dir, 'pids'), 'utf8').split('\n').filter(Boolean);
  } catch {
    return; // stopped already
  }
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/** Every Swift still running when the test process exits is killed. */
function killLeftovers(): void {
  for (const dir of started) killServers(dir);
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A base port whose next four are free too, a moment ago. */
async function freePortBlock(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    let free = true;
    for (let port = base; port < base + 5 && free; port++) free = await portFree(port);
    if (free) return base;
  }
  throw new Error('no block of five free ports found');
}

async function run(script: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const file = await sharedKit('testing', script);
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

export async function startSwift(): Promise<Swift> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', killLeftovers);
  }
  const dir = await makeTempDir('regmirror-swift');
  let base = 0;
  const start = async (): Promise<void> => {
    started.add(dir);
    const result = await run('swift-start.sh', [dir, String(base)]);
    if (result.code !== 0) {
      await run('swift-stop.sh', [dir]);
      throw new Error(`swift-start.sh failed (${String(result.code)}): ${result.output.trim()}`);
    }
  };
  const stop = async (): Promise<void> => {
    await run('swift-stop.sh', [dir]);
    started.delete(dir);
  };
  // Another process may take a port between the check and the bind: a few tries on new ports.
  for (let attempt = 1; ; attempt++) {
    base = await freePortBlock();
    try {
      await start();
      break;
    } catch (error) {
      if (attempt >= 3) {
        await removeDir(dir);
        throw error;
      }
    }
  }
  const endpoint = `http://127.0.0.1:${base}`;
  const client = (): S3Client =>
    new S3Client({
      region: SWIFT_REGION,
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  return {
    endpoint,
    dir,
    client,
    createBucket: async (name) => {
      const s3 = client();
      try {
        await s3.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        s3.destroy();
      }
    },
    stop,
    kill: async () => {
      killServers(dir);
      // swift-stop.sh waits until they are gone and forgets them.
      await stop();
    },
    start,
    destroy: async () => {
      await stop();
      await removeDir(dir);
    },
  };
}


/** The REGMIRROR_* variables of a regmirror storing its content in this Swift's bucket under prefix (credentials by variable). */
export function s3StorageEnvironment(swift: Swift, bucket: string, prefix: string): NodeJS.ProcessEnv {
  return {
    REGMIRROR_STORAGE_DRIVER: 's3',
    REGMIRROR_STORAGE_S3_BUCKET: bucket,
    REGMIRROR_STORAGE_S3_ENDPOINT: swift.endpoint,
    REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: 'true',
    REGMIRROR_STORAGE_S3_PREFIX: prefix,
    REGMIRROR_STORAGE_S3_ACCESS_KEY_ENV: 'TEST_S3_KEY',
    REGMIRROR_STORAGE_S3_SECRET_KEY_ENV: 'TEST_S3_SECRET',
    TEST_S3_KEY: SWIFT_ACCESS_KEY,
    TEST_S3_SECRET: SWIFT_SECRET_KEY,
  };
}
