// TLS on the listeners: the https server options over the configured files, and their reload (SIGHUP, or the files
// changing) into each server's secure context: new handshakes get the new certificate, open connections keep theirs.

import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import type { ServerOptions } from 'node:https';
import type { Socket } from 'node:net';
import path from 'node:path';
import { Server as TlsServer, type SecureContextOptions, type TLSSocket } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { readTlsFiles, type TlsFiles, type TlsMaterial } from '../config/tls-files.js';

/** Editors and cert-manager write a file, or a pair, in several steps: wait for this much quiet before reading. */
const SETTLE_MS = 200;

type Log = Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;

function secureContextOptions(material: TlsMaterial): SecureContextOptions {
  // Node's default ciphers; nothing below TLS 1.2 (whatever Node's own default or flags say).
  return { cert: material.certificate, key: material.key, ca: material.clientCA, minVersion: 'TLSv1.2' };
}

/** Options of an https server (fastify's routes are HTTP/1.1 only, hence ALPN); a handshake may take as long as a client may idle. */
export function httpsServerOptions(material: TlsMaterial, handshakeTimeoutMs: number): ServerOptions {
  const mutual = material.clientCA !== undefined;
  return {
    ...secureContextOptions(material),
    ALPNProtocols: ['http/1.1'],
    // With a client CA, a client without a certificate signed by it is refused at the handshake.
    requestCert: mutual,
    rejectUnauthorized: mutual,
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/**
 * Closes, when the server stops (fastify's preClose), the connections still in their TLS handshake: node's http layer
 * knows a connection only once its handshake is done, so closeAllConnections() misses them and server.close() would
 * wait for them (up to the handshake timeout).
 */
export function dropHandshakesOnClose(app: FastifyInstance): void {
  const server = app.server;
  if (!(server instanceof TlsServer)) return;
  // The raw socket and its TLS socket share the peer address: the key that links them with public fields only.
  const handshaking = new Map<string, Socket>();
  const peer = (socket: Socket): string => `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;
  let closing = false;
  server.on('connection', (socket: Socket) => {
    // Taken (by a copy of the listening socket) after the drop: the server is about to stop listening.
    if (closing) {
      socket.destroy();
      return;
    }
    const key = peer(socket);
    handshaking.set(key, socket);
    socket.once('close', () => {
      if (handshaking.get(key) === socket) handshaking.delete(key);
    });
  });
  server.on('secureConnection', (socket: TLSSocket) => handshaking.delete(peer(socket)));
  app.addHook('preClose', (done) => {
    closing = true;
    for (const socket of handshaking.values()) socket.destroy();
    handshaking.clear();
    done();
  });
}

/**
 * Re-reads the TLS files into the servers' secure contexts. Triggers: reload() (SIGHUP), and any change in the files'
 * directories (fs.watch; a whole directory, not the names, because Kubernetes and cert-manager swap a `..data` link
 * beside the files rather than the files themselves). A change is applied only when the bytes differ from the last read;
 * files that do not parse or do not match keep the certificate in use, and say why in the log.
 */
export class TlsReloader {
  private readonly servers: TlsServer[] = [];
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private lastRead: string;
  private closed = false;

  constructor(
    private readonly files: TlsFiles,
    private material: TlsMaterial,
    private readonly log: Log,
  ) {
    this.lastRead = this.fingerprint();
    log.info({ tls: material.summary }, 'TLS certificate loaded');
    if (material.summary.expired) log.warn({ tls: material.summary }, 'the TLS certificate has expired');
  }

  /** Keeps server's certificate in step; logs its failed handshakes (refused client certificates, scanners) at debug. */
  serve(server: HttpServer): void {
    if (!(server instanceof TlsServer)) throw new Error('TlsReloader.serve: not a TLS server');
    this.servers.push(server);
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: TLSSocket) => {
      this.log.debug({ code: error.code, reason: error.message, remote: socket.remoteAddress }, 'TLS handshake failed');
    });
  }

  /** Watches the files' directories; a directory that cannot be watched is logged (SIGHUP still reloads). */
  watch(): void {
    for (const directory of new Set(this.paths().map((file) => path.dirname(path.resolve(file))))) {
      try {
        const watcher = watch(directory, { persistent: false }, () => this.changed());
        watcher.on('error', (error) => {
          this.log.warn({ err: error, directory }, 'TLS files no longer watched here: reload with SIGHUP');
          watcher.close();
        });
        this.watchers.push(watcher);
      } catch (error) {
        this.log.warn({ err: error, directory }, 'TLS files not watched here: reload with SIGHUP');
      }
    }
  }

  /** Reads the files now and applies them even when unchanged; also re-arms the watches (a directory may have been replaced). */
  reload(trigger: string): boolean {
    if (this.closed) return false;
    this.unwatch();
    this.watch();
    this.lastRead = this.fingerprint();
    return this.apply(trigger);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.unwatch();
  }

  private changed(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      const read = this.fingerprint();
      if (read === this.lastRead) return;
      this.lastRead = read;
      this.apply('file change');
    }, SETTLE_MS);
    this.timer.unref();
  }

  private apply(trigger: string): boolean {
    let material: TlsMaterial;
    try {
      material = readTlsFiles(this.files);
      for (const server of this.servers) server.setSecureContext(secureContextOptions(material));
    } catch (error) {
      this.log.error({ err: error, trigger, inUse: this.material.summary }, 'TLS reload failed: the certificate in use stays');
      return false;
    }
    this.material = material;
    this.log.info({ trigger, tls: material.summary }, 'TLS certificate reloaded');
    if (material.summary.expired) this.log.warn({ tls: material.summary }, 'the TLS certificate has expired');
    return true;
  }

  /** The bytes of the files as they are (a file that cannot be read counts as its error). */
  private fingerprint(): string {
    const hash = createHash('sha256');
    for (const file of this.paths()) {
      try {
        hash.update(readFileSync(file));
      } catch (error) {
        hash.update(`unreadable: ${(error as NodeJS.ErrnoException).code ?? ''}`);
      }
      hash.update('\0');
    }
    return hash.digest('hex');
  }

  private paths(): string[] {
    return [this.files.certificate, this.files.key, ...(this.files.clientCA === undefined ? [] : [this.files.clientCA])];
  }

  private unwatch(): void {
    for (const watcher of this.watchers) watcher.close();
    this.watchers = [];
  }
}
