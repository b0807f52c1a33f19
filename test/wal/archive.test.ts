import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirectoryStore } from '../../src/store/directory.ts';
import {
  ArchiveError,
  archiveAhead,
  prefetchDir,
  walFetch,
  walKey,
  walPrefetch,
  walPush,
  type ArchiveOptions,
} from '../../src/wal/archive.ts';

describe('the WAL archive', () => {
  let dir: string;
  let opts: ArchiveOptions;
  let pgWal: string;
  const segment = (n: number) => `0000000100000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'pgfleet-wal-'));
    pgWal = path.join(dir, 'pg_wal');
    opts = { store: new DirectoryStore(path.join(dir, 'store')), prefix: 'servers/s1' };
    await mkdir(pgWal);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function walFile(name: string, bytes: Buffer): Promise<string> {
    const file = path.join(pgWal, name);
    await writeFile(file, bytes);
    return file;
  }

  it('pushes a segment compressed and checksummed, and fetches it back byte for byte', async () => {
    // A segment as Postgres leaves it: some records, then zeros to 16 MiB.
    const bytes = Buffer.concat([randomBytes(1024 * 1024), Buffer.alloc(15 * 1024 * 1024)]);
    expect(await walPush(opts, await walFile(segment(1), bytes))).toBe('archived');
    const stored = await opts.store.head(walKey(opts.prefix, segment(1)));
    expect(stored!.size).toBeLessThan(bytes.length / 10);
    expect(stored!.metadata).toMatchObject({
      size: String(bytes.length),
      compression: 'gzip',
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    const dest = path.join(dir, 'restored');
    expect(await walFetch(opts, segment(1), dest)).toBe('restored');
    expect((await readFile(dest)).equals(bytes)).toBe(true);
  });

  it('treats the same bytes again as success, and refuses different bytes under the same name', async () => {
    const bytes = randomBytes(4096);
    const file = await walFile(segment(2), bytes);
    expect(await walPush(opts, file)).toBe('archived');
    expect(await walPush(opts, file)).toBe('already archived');
    await writeFile(file, randomBytes(4096));
    const refused = await walPush(opts, file).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ArchiveError);
    expect((refused as ArchiveError).fatal).toBe(true);
    expect((refused as Error).message).toMatch(/refusing to overwrite 000000010000000000000002 .* different bytes/);
    const dest = path.join(dir, 'again');
    await walFetch(opts, segment(2), dest);
    expect((await readFile(dest)).equals(bytes)).toBe(true);
  });

  it('handles .history and .partial files, and refuses names that are not WAL', async () => {
    const history = Buffer.from('1\t0/3000000\tno recovery target specified\n');
    expect(await walPush(opts, await walFile('00000002.history', history))).toBe('archived');
    expect(await walPush(opts, await walFile(`${segment(3)}.partial`, randomBytes(100)))).toBe('archived');
    const dest = path.join(dir, 'RECOVERYHISTORY');
    expect(await walFetch(opts, '00000002.history', dest)).toBe('restored');
    expect(await readFile(dest, 'utf8')).toBe(history.toString());
    // A timeline that does not exist is normal during recovery: missing, not an error.
    expect(await walFetch(opts, '00000009.history', dest)).toBe('missing');
    await expect(walPush(opts, await walFile('postgresql.conf', Buffer.from('x')))).rejects.toThrow(/not a WAL file name/);
  });

  it('refuses a damaged archive copy as fatal, so recovery stops instead of skipping it', async () => {
    await walPush(opts, await walFile(segment(4), randomBytes(8192)));
    const file = path.join(dir, 'store', ...walKey(opts.prefix, segment(4)).split('/'));
    const raw = await readFile(file);
    raw.writeUInt8(raw.readUInt8(raw.length - 20) ^ 0xff, raw.length - 20);
    await writeFile(file, raw);
    const err = await walFetch(opts, segment(4), path.join(dir, 'damaged')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArchiveError);
    expect((err as ArchiveError).fatal).toBe(true);
  });

  it('prefetches the next segments in parallel, and the next fetch takes them from there', async () => {
    const bodies = new Map<string, Buffer>();
    for (const n of [10, 11, 12, 13]) {
      bodies.set(segment(n), randomBytes(2048));
      await walPush(opts, await walFile(segment(n), bodies.get(segment(n))!));
    }
    const dest = path.join(pgWal, 'RECOVERYXLOG');
    expect(await walFetch(opts, segment(10), dest)).toBe('restored');
    // Asks for 5 ahead: 3 exist.
    expect(await walPrefetch(opts, segment(10), dest, 5)).toBe(3);
    expect((await readdir(prefetchDir(dest))).sort()).toEqual([segment(11), segment(12), segment(13)]);
    expect(await walFetch(opts, segment(11), dest)).toBe('prefetched');
    expect((await readFile(dest)).equals(bodies.get(segment(11))!)).toBe(true);
    expect(await readdir(prefetchDir(dest))).not.toContain(segment(11));
  });

  it('says whether it holds WAL past what a standby received', async () => {
    const store = new DirectoryStore(path.join(dir, 'ahead'));
    const options = { store, prefix: 'servers/s2' };
    const mib = 1024 * 1024;
    await walPush(options, await walFile(segment(2), Buffer.alloc(16 * mib)));
    // Everything before segment 3: the archive's segment 2 is no news.
    expect(await archiveAhead(store, 'servers/s2', 1, 3 * 16 * mib)).toBe(false);
    expect(await archiveAhead(store, 'servers/s2', 1, 3 * 16 * mib + 100)).toBe(false);
    // Midway through segment 2: its end is in the archive only.
    expect(await archiveAhead(store, 'servers/s2', 1, 2 * 16 * mib + 100)).toBe(true);
    // A timeline the standby does not know began.
    await walPush(options, await walFile('00000002.history', Buffer.from('1\t0/3000000\tno recovery target specified\n')));
    expect(await archiveAhead(store, 'servers/s2', 1, 3 * 16 * mib)).toBe(true);
    expect(await archiveAhead(store, 'servers/s2', 2, 3 * 16 * mib)).toBe(false);
  });
});
