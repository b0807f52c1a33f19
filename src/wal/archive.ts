import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import type { ObjectStore } from '../store/store.ts';
import { historyName, nextSegments, segmentName, walKind } from './segments.ts';

const compress = promisify(gzip);
const decompress = promisify(gunzip);

/**
 * The WAL archive, ours in the spirit of WAL-E: each file Postgres hands `archive_command`
 * is gzipped and stored under `<prefix>/wal/<name>.gz` with its SHA-256 and size, never
 * overwriting a file with different bytes; `restore_command` gets them back, verified, and
 * fetches the next segments ahead in parallel.
 */
export interface ArchiveOptions {
  store: ObjectStore;
  /** Where this server's archive lives in the store, e.g. `servers/<id>`. */
  prefix: string;
}

export class ArchiveError extends Error {
  constructor(
    message: string,
    /** Corrupt or conflicting data: recovery must stop, not carry on without it. */
    readonly fatal = false,
  ) {
    super(message);
  }
}

export const walKey = (prefix: string, name: string) => `${prefix}/wal/${name}.gz`;
/**
 * Whether an archive holds WAL a standby lacks, the standby having received everything
 * before byte `position` on `timeline`: the segment holding `position` is archived (so is
 * its end, which the standby has not), or a later timeline began. Segments are archived in
 * order, so nothing later is there when that one is not.
 */
export async function archiveAhead(store: ObjectStore, prefix: string, timeline: number, position: number): Promise<boolean> {
  const found = await Promise.all(
    [segmentName(timeline, position), historyName(timeline + 1)].map((name) => store.head(walKey(prefix, name))),
  );
  return found.some((info) => info !== undefined);
}
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Archive one WAL file. Same bytes already there is success; different bytes is refused. */
export async function walPush(opts: ArchiveOptions, file: string): Promise<'archived' | 'already archived'> {
  const name = path.basename(file);
  if (!walKind(name)) throw new ArchiveError(`${name} is not a WAL file name Postgres archives`);
  const bytes = await fs.readFile(file);
  const sum = sha256(bytes);
  const result = await opts.store.putIfAbsent(walKey(opts.prefix, name), await compress(bytes, { level: 1 }), {
    sha256: sum,
    size: String(bytes.length),
    compression: 'gzip',
  });
  if (result.outcome === 'written') return 'archived';
  if (result.existing.metadata.sha256 === sum) return 'already archived';
  throw new ArchiveError(
    `refusing to overwrite ${name} in ${opts.store.description}: the archive holds different bytes ` +
      `(sha256 ${result.existing.metadata.sha256} there, ${sum} here)`,
    true,
  );
}

/** Fetch, decompress and verify one WAL file from the store; undefined when it is not there. */
export async function walDownload(opts: ArchiveOptions, name: string): Promise<Buffer | undefined> {
  const object = await opts.store.get(walKey(opts.prefix, name));
  if (!object) return undefined;
  let bytes: Buffer;
  try {
    bytes = await decompress(object.body);
  } catch (err) {
    throw new ArchiveError(`${name} in ${opts.store.description} does not decompress: ${(err as Error).message}`, true);
  }
  if (sha256(bytes) !== object.metadata.sha256 || String(bytes.length) !== object.metadata.size) {
    throw new ArchiveError(`${name} in ${opts.store.description} fails its checksum: the archive copy is damaged`, true);
  }
  return bytes;
}

async function writeAtomically(dest: string, bytes: Buffer): Promise<void> {
  const tmp = `${dest}.pgfleet-${randomBytes(4).toString('hex')}`;
  const handle = await fs.open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, dest);
}

/** Where prefetched segments wait for the restore_command that will ask for them. */
export const prefetchDir = (dest: string) => path.join(path.dirname(dest), '.pgfleet-prefetch');

/**
 * Restore one WAL file to `dest` for Postgres: from the prefetch directory when a previous
 * fetch brought it ahead, else from the store. `missing` is normal (the end of the archive,
 * a timeline that does not exist); the caller exits non-zero and Postgres moves on.
 */
export async function walFetch(opts: ArchiveOptions, name: string, dest: string): Promise<'restored' | 'prefetched' | 'missing'> {
  if (!walKind(name)) throw new ArchiveError(`${name} is not a WAL file name`);
  const ahead = path.join(prefetchDir(dest), name);
  const prefetched = await fs.readFile(ahead).catch(() => undefined);
  if (prefetched) {
    await writeAtomically(dest, prefetched);
    await fs.rm(ahead, { force: true });
    return 'prefetched';
  }
  const bytes = await walDownload(opts, name);
  if (!bytes) return 'missing';
  await writeAtomically(dest, bytes);
  return 'restored';
}

/**
 * Bring the `count` segments after `name` into the prefetch directory, in parallel, each
 * complete or not at all. Run detached after a fetch, so replay does not wait on the store.
 */
export async function walPrefetch(opts: ArchiveOptions, name: string, dest: string, count: number): Promise<number> {
  const dir = prefetchDir(dest);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const wanted = nextSegments(name, count);
  const fetched = await Promise.all(
    wanted.map(async (segment) => {
      const target = path.join(dir, segment);
      if (
        await fs.stat(target).then(
          () => true,
          () => false,
        )
      )
        return 0;
      const bytes = await walDownload(opts, segment).catch(() => undefined);
      if (!bytes) return 0;
      await writeAtomically(target, bytes);
      return 1;
    }),
  );
  // Segments older than the one asked for were replayed from elsewhere: drop them.
  for (const leftover of await fs.readdir(dir))
    if (walKind(leftover) === 'segment' && leftover < name) await fs.rm(path.join(dir, leftover), { force: true });
  return fetched.reduce<number>((a, b) => a + b, 0);
}
