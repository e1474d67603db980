#!/usr/bin/env -S node --max-semi-space-size=3
// The regmirror command line: `regmirror serve` and `regmirror verify` with their flags, over the one
// configuration schema; and `regmirror prefetch`, a client of a running mirror.

import { Command } from 'commander';
import { ConfigError } from './config/config-error.js';
import { loadSettings, type ConfigFlags } from './config/load.js';
import { createLogger, startMirror } from './app.js';
import { describeError } from './cli/describe-error.js';
import { DEFAULT_SERVER, runPrefetch, type PrefetchFlags } from './cli/prefetch.js';
import { runVerify, type VerifyFlags } from './cli/verify.js';
import { runGc, type GcFlags } from './cli/gc.js';
import { DataDirectoryInUse } from './store/data-directory-lock.js';
import { StorageError } from './store/storage-error.js';

const program = new Command();
program.name('regmirror').description('A verified, single-flight pull-through container registry mirror');
// Bad usage (an unknown option, a missing value) exits 2, as a bad configuration does; set before the
// commands are added, which copy it.
program.exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

program
  .command('serve')
  .description('serve the registry API, mirroring the configured upstreams')
  .option('-c, --config <file>', 'YAML configuration file: regmirror\'s own, or a docker-registry 0.9 one')
  .option('--flavor <name>', 'the flavor of a docker-registry configuration file (default $SETTINGS_FLAVOR, else dev)')
  .option('--listen <address>', 'HOST:PORT, :PORT or [IPv6]:PORT to listen on (default :5000)')
  .option('--data <dir>', 'data directory (default ./data)')
  .option('--upstream <[registry=]url>', 'an upstream registry; repeat for several, the first is the default', collect, [])
  .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
  .option('--cache-max-size <size>', 'the most the cache may hold, e.g. 200GiB (default: no bound but free space)')
  .action(async (flags: ConfigFlags) => {
    let loaded;
    try {
      loaded = loadSettings(flags);
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`regmirror: ${error.message}\n`);
        process.exit(2);
      }
      throw error;
    }
    const { settings, warnings } = loaded;
    const logger = createLogger(settings.logLevel);
    for (const warning of warnings) logger.warn(warning);
    let running;
    try {
      running = await startMirror(settings, logger);
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`regmirror: ${error.message}\n`);
        process.exit(2);
      }
      if (error instanceof StorageError) {
        // A bucket that is not there or refuses the credentials: said in a line, not a stack.
        process.stderr.write(`regmirror: cannot start: ${describeError(error)}\n`);
        process.exit(1);
      }
      if (!(error instanceof DataDirectoryInUse)) throw error;
      process.stderr.write(`regmirror: ${error.message}; one data directory serves one process\n`);
      process.exit(2);
    }
    let signals = 0;
    const stop = (signal: NodeJS.Signals): void => {
      signals += 1;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      logger.info({ signal }, 'shutting down');
      running.close().then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    // A reload, as nginx and distribution take it; also keeps a lost terminal from stopping the server.
    process.on('SIGHUP', () => {
      logger.info({ signal: 'SIGHUP' }, 'reloading');
      running.reload();
    });
  });

/** A command that works on a data directory no server is using: the options that find it. */
function offlineCommand(name: string, description: string, configHelp: string): Command {
  return program
    .command(name)
    .description(description)
    .option('-c, --config <file>', `YAML configuration file (${configHelp})`)
    .option('--flavor <name>', 'the flavor of a docker-registry configuration file')
    .option('--data <dir>', 'data directory (default ./data)');
}

offlineCommand('verify', 're-hash every stored object and check every record; exit 0 when all is well, 1 when not, 2 on bad usage', 'for the data directory and the v1 storage prefix')
  .option('--repair', 'remove what does not match (file and records), orphan records and files, and temporaries')
  .action(async (flags: VerifyFlags) => {
    process.exitCode = await runVerify(flags);
  });

offlineCommand('gc', 'garbage-collect a data directory no server is using: what no tag, pin or recent read holds, orphans, temporaries', 'for the data directory and gc.grace')
  .option('--dry-run', 'print what would be removed, and remove nothing')
  .action(async (flags: GcFlags) => {
    process.exitCode = await runGc(flags);
  });

program
  .command('prefetch')
  .description('pull images through a running mirror so that it caches them; exit 0 when all were pulled, 1 when any failed, 2 on bad usage')
  .argument('<ref...>', 'images: [REGISTRY/]NAME:TAG or [REGISTRY/]NAME@DIGEST (REGISTRY: a registry name or alias the mirror routes; none: its default upstream)')
  .option('--server <url>', 'the mirror', DEFAULT_SERVER)
  .option('--platform <os/arch[/variant]>', 'of an index, only the manifests of this platform; repeatable (default: every platform)', collect)
  .option('--creds <user:password>', 'log in to a mirror with auth (or REGMIRROR_PREFETCH_CREDS, which ps does not show)')
  .action(async (references: string[], flags: PrefetchFlags) => {
    process.exitCode = await runPrefetch(references, flags);
  });

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`regmirror: ${describeError(error)}\n`);
  process.exit(1);
});
