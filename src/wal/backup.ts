import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createGunzip, createGzip, gunzip } from 'node:zlib';
import type { PgBinaries } from '../pg/binaries.ts';
import type { ObjectStore } from '../store/store.ts';
import { watchChild } from '../child.ts';

/**
 * Base backups, streamed: `pg_basebackup` writes a tar to stdout, which is gzipped on the
 * fly and cut into parts of PART_BYTES, each stored (never overwritten) as it fills, so a
 * backup of any size passes through a bounded buffer. A manifest written last lists the
 * parts with their checksums and the WAL a restore must replay: a backup without a
 * manifest is unfinished and never used.
 *
 * A label is taken again after an attempt that failed (the job retries it), and no two
 * runs of pg_basebackup give the same bytes. So each attempt stores its parts under a name
 * of its own, and removes them when it fails: parts stored by an attempt that died
 * mid-stream had made every retry of its label fail ("exists with different bytes"). The
 * manifest, written once, says which attempt the backup is; a finished label is never
 * taken again.
 */
export const PART_BYTES = 32 * 1024 * 1024;

export interface BackupManifest {
  label: string;
  /** The archive prefix of the server it was taken from; its WAL is under `<prefix>/wal`. */
  prefix: string;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  /** The first and last WAL segments a restore needs. */
  startWal: string;
  stopWal: string;
  parts: { key: string; bytes: number; sha256: string }[];
  /** Size of the tar before compression. */
  bytes: number;
  startedAt: string;
  finishedAt: string;
}

export interface BackupSource {
  host: string;
  port: number;
  password: string;
}

/** A backup's label: when it was asked for, and a random tail so two never share one. */
export function backupLabel(): string {
  return `${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}Z-${randomBytes(3).toString('hex')}`;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const manifestKey = (prefix: string, label: string) => `${prefix}/backups/${label}/manifest.json`;

/**
 * Cut a stream into parts of `size` bytes, handing each full one to `flush` in order, and
 * return what is left: the last part, which only the caller can tell is whole.
 */
async function inParts(stream: AsyncIterable<Buffer>, size: number, flush: (part: Buffer) => Promise<void>): Promise<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    pending.push(chunk);
    length += chunk.length;
    while (length >= size) {
      const all = Buffer.concat(pending);
      await flush(all.subarray(0, size));
      pending = [all.subarray(size)];
      length = pending[0]!.length;
    }
  }
  return Buffer.concat(pending);
}

/** The `.backup` history file Postgres archives when a backup ends, parsed. */
function parseBackupHistory(
  text: string,
): { label: string; startLsn: string; startWal: string; stopLsn: string; stopWal: string; timeline: number } | undefined {
  const field = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(text)?.[1];
  const start = /^([0-9A-F]+\/[0-9A-F]+) \(file ([0-9A-F]{24})\)$/.exec(field('START WAL LOCATION') ?? '');
  const stop = /^([0-9A-F]+\/[0-9A-F]+) \(file ([0-9A-F]{24})\)$/.exec(field('STOP WAL LOCATION') ?? '');
  const label = field('LABEL');
  if (!start || !stop || !label) return undefined;
  return {
    label,
    startLsn: start[1]!,
    startWal: start[2]!,
    stopLsn: stop[1]!,
    stopWal: stop[2]!,
    timeline: Number(field('STOP TIMELINE') ?? '1'),
  };
}

async function waitForHistory(store: ObjectStore, prefix: string, label: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const keys = (await store.list(`${prefix}/wal/`)).filter((k) => k.endsWith('.backup.gz')).reverse();
    for (const key of keys) {
      const object = await store.get(key);
      const parsed = object && parseBackupHistory((await promisify(gunzip)(object.body)).toString('utf8'));
      if (parsed?.label === label && (await store.head(`${prefix}/wal/${parsed.stopWal}.gz`))) return parsed;
    }
    if (Date.now() > deadline)
      throw new Error(
        `the backup ${label} finished but its WAL did not reach the archive within ${timeoutMs / 1000} s: is archiving working?`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Take a base backup of a running server into the store, under its archive prefix. Taking
 * a label that is finished returns its manifest and changes nothing.
 */
export async function takeBaseBackup(
  bin: PgBinaries,
  store: ObjectStore,
  prefix: string,
  source: BackupSource,
  label: string,
  partBytes = PART_BYTES,
): Promise<BackupManifest> {
  const finished = await findBackup(store, prefix, label);
  if (finished) return finished;
  if (!bin.pgBasebackup) throw new Error(`base backups need pg_basebackup next to the Postgres binaries in ${bin.dir}`);
  const startedAt = new Date().toISOString();
  const attempt = randomBytes(4).toString('hex');
  const child = spawn(
    bin.pgBasebackup,
    [
      '-h',
      source.host,
      '-p',
      String(source.port),
      '-U',
      'postgres',
      '-D',
      '-',
      '-F',
      'tar',
      '-X',
      'none',
      '-c',
      'fast',
      '--label',
      label,
      '--no-manifest',
    ],
    {
      env: { PATH: process.env.PATH, PGPASSWORD: source.password, PGCONNECT_TIMEOUT: '10' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const { exited, stderr } = watchChild(child);
  let bytes = 0;
  const counted = child.stdout!.on('data', (d: Buffer) => (bytes += d.length));
  const parts: BackupManifest['parts'] = [];
  const storePart = async (part: Buffer) => {
    const key = `${prefix}/backups/${label}/${attempt}/base.tar.gz.${String(parts.length).padStart(5, '0')}`;
    const sum = sha256(part);
    const result = await store.putIfAbsent(key, part, { sha256: sum });
    if (result.outcome === 'exists' && result.existing.metadata.sha256 !== sum) throw new Error(`${key} exists with different bytes`);
    parts.push({ key, bytes: part.length, sha256: sum });
  };
  let manifest: BackupManifest;
  try {
    const last = await inParts(counted.pipe(createGzip({ level: 1 })), partBytes, storePart);
    const code = await exited;
    if (code !== 0) throw new Error(`pg_basebackup failed (${code}): ${stderr().trim().slice(-1000)}`);
    // Only once pg_basebackup has ended well is the last part known to be whole.
    if (last.length > 0 || parts.length === 0) await storePart(last);
    const history = await waitForHistory(store, prefix, label, 60_000);
    manifest = { ...history, prefix, parts, bytes, startedAt, finishedAt: new Date().toISOString() };
  } catch (err) {
    // A store that fails stops the backup, and a backup that fails leaves nothing behind.
    child.kill('SIGTERM');
    await removeParts(store, parts);
    throw err;
  }
  const body = Buffer.from(JSON.stringify(manifest, null, 2));
  const written = await store.putIfAbsent(manifestKey(prefix, label), body, { sha256: sha256(body) });
  if (written.outcome === 'written') return manifest;
  // Another attempt at this label finished first (a job run twice at once): that one is the backup.
  await removeParts(store, parts);
  return (await findBackup(store, prefix, label))!;
}

async function removeParts(store: ObjectStore, parts: BackupManifest['parts']): Promise<void> {
  for (const part of parts) await store.delete(part.key).catch(() => undefined);
}

/** The newest finished backup under a prefix. */
export async function latestBackup(store: ObjectStore, prefix: string): Promise<BackupManifest | undefined> {
  return (await listBackups(store, prefix)).at(-1);
}

/** The backup with this label under a prefix, once it is finished. */
export async function findBackup(store: ObjectStore, prefix: string, label: string): Promise<BackupManifest | undefined> {
  const object = await store.get(manifestKey(prefix, label));
  return object ? (JSON.parse(object.body.toString('utf8')) as BackupManifest) : undefined;
}

/** The backup's tar, verified part by part and decompressed, as a stream. */
export function backupTar(store: ObjectStore, manifest: BackupManifest): Readable {
  async function* parts() {
    for (const part of manifest.parts) {
      const object = await store.get(part.key);
      if (!object || sha256(object.body) !== part.sha256) throw new Error(`${part.key} of backup ${manifest.label} is missing or damaged`);
      yield object.body;
    }
  }
  const source = Readable.from(parts());
  const gunzipped = createGunzip();
  source.on('error', (err) => gunzipped.destroy(err));
  return source.pipe(gunzipped);
}

/** Every finished backup under a prefix, oldest first. */
export async function listBackups(store: ObjectStore, prefix: string): Promise<BackupManifest[]> {
  const keys = (await store.list(`${prefix}/backups/`)).filter((k) => k.endsWith('/manifest.json'));
  const manifests = await Promise.all(keys.map(async (k) => JSON.parse((await store.get(k))!.body.toString('utf8')) as BackupManifest));
  return manifests.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
}
