import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { openArchive } from '../store/open.ts';
import { ArchiveError, walFetch, walPrefetch, walPush, type ArchiveOptions } from './archive.ts';

/**
 * What a server's `archive_command` and `restore_command` run: `wal-push %p`,
 * `wal-fetch %f %p` (and, detached, `wal-prefetch`), each with `--config <file>` naming the
 * store and the server's prefix. Exit codes are Postgres' contract: 0 done; 1 not done (an
 * archive retried later, a segment the archive does not have); 126 for damaged or
 * conflicting data, which makes Postgres stop recovery rather than carry on without it.
 */
export interface ArchiveConfig {
  store: string;
  prefix: string;
  /** Segments fetched ahead, in parallel, after each restore. */
  prefetch?: number;
  /** Credentials for the store (S3), kept in the config file, never on a command line. */
  env?: Record<string, string>;
}

export const EXIT_MISSING = 1;
export const EXIT_FATAL = 126;

function load(configFile: string): { options: ArchiveOptions; config: ArchiveConfig } {
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as ArchiveConfig;
  return { config, options: { store: openArchive({ storeUrl: config.store, env: config.env }), prefix: config.prefix } };
}

export async function walMain(argv: string[]): Promise<number> {
  const i = argv.indexOf('--config');
  const configFile = i >= 0 ? argv[i + 1] : undefined;
  const args = i >= 0 ? [...argv.slice(0, i), ...argv.slice(i + 2)] : argv;
  const [command, a, b] = args;
  if (!configFile || !command || !a) {
    process.stderr.write('usage: wal-push <path> --config <file> | wal-fetch <name> <dest> --config <file>\n');
    return 2;
  }
  try {
    const { options, config } = load(configFile);
    switch (command) {
      case 'wal-push':
        await walPush(options, a);
        return 0;
      case 'wal-fetch': {
        if (!b) throw new ArchiveError('wal-fetch needs a destination: wal-fetch %f %p');
        const outcome = await walFetch(options, a, b);
        if (outcome === 'missing') return EXIT_MISSING;
        const ahead = config.prefetch ?? 8;
        if (ahead > 0) {
          // Detached, so replay goes on while the next segments arrive.
          spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'wal-prefetch', a, b, String(ahead), '--config', configFile], {
            detached: true,
            stdio: 'ignore',
          }).unref();
        }
        return 0;
      }
      case 'wal-prefetch':
        await walPrefetch(options, a, b!, Number(args[3] ?? 8));
        return 0;
      default:
        process.stderr.write(`unknown command ${command}\n`);
        return 2;
    }
  } catch (err) {
    process.stderr.write(`pgfleet ${command}: ${(err as Error).message}\n`);
    return err instanceof ArchiveError && err.fatal ? EXIT_FATAL : 1;
  }
}
