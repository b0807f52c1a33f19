import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { backupTar, findBackup, takeBaseBackup } from '../../src/wal/backup.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { superuserClient } from '../support/providers.ts';
import { startS3, type S3Server } from '../support/s3.ts';

/** The names of the files in a tar stream, and the text of `backup_label`. */
async function tarContents(tar: NodeJS.ReadableStream): Promise<{ names: string[]; label: string }> {
  const chunks: Buffer[] = [];
  for await (const chunk of tar) chunks.push(chunk as Buffer);
  const all = Buffer.concat(chunks);
  const names: string[] = [];
  let label = '';
  for (let at = 0; at + 512 <= all.length && all[at] !== 0;) {
    const name = all
      .subarray(at, at + 100)
      .toString('utf8')
      .replace(/\0.*$/s, '');
    const size = parseInt(
      all
        .subarray(at + 124, at + 136)
        .toString('utf8')
        .replace(/\0.*$/s, '')
        .trim() || '0',
      8,
    );
    names.push(name);
    if (name === 'backup_label') label = all.subarray(at + 512, at + 512 + size).toString('utf8');
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return { names, label };
}

/** Terminate the walsender of the base backup under way once it has streamed `bytes`. */
async function killBackupAfter(servers: ArchivedServers, server: ServerRecord, bytes: number): Promise<number> {
  const client = superuserClient(server);
  await client.connect();
  try {
    for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
      const { rows } = await client.query<{ pid: number; streamed: string }>(
        'select pid, backup_streamed::text as streamed from pg_stat_progress_basebackup',
      );
      const row = rows[0];
      if (row && Number(row.streamed) >= bytes) {
        await client.query('select pg_terminate_backend($1)', [row.pid]);
        return Number(row.streamed);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error('no base backup streamed that much');
  } finally {
    await client.end();
  }
}

for (const kind of ['directory', 's3'] as const) {
  describe(`a base backup into a ${kind} store`, { timeout: 120_000 }, () => {
    let s3: S3Server | undefined;
    let servers: ArchivedServers;
    let source: ServerRecord;
    const prefix = () => `servers/${source.id}`;
    const backupOf = (label: string, partBytes?: number) =>
      takeBaseBackup(
        servers.bin,
        servers.store,
        prefix(),
        { host: source.host!, port: source.port!, password: source.superuserPassword },
        label,
        partBytes,
      );

    beforeAll(async () => {
      if (kind === 's3') s3 = await startS3({ conditionalWrites: true });
      servers = await archivedServers(s3 ? { storeUrl: s3.storeUrl('archive'), env: s3.env } : undefined);
      source = await servers.server();
      // Enough that the backup is still streaming when it is cut: ~40 MB of rows.
      await servers.query(
        source,
        `create table pad as select i, md5(i::text) || md5((-i)::text) as a, md5((i * 7)::text) as b from generate_series(1, 300000) as i`,
      );
    });
    afterAll(async () => {
      await servers?.cleanup();
      await s3?.stop();
    });

    it('taken again under its label after dying mid-stream: the retry succeeds, and nothing of the dead attempt is left', async () => {
      const label = `retried-${kind}`;
      const dying = backupOf(label, 1024 * 1024).then(
        () => 'finished',
        (err: Error) => err.message,
      );
      const streamed = await killBackupAfter(servers, source, 20 * 1024 * 1024);
      expect(streamed).toBeGreaterThan(0);
      expect(await dying).toMatch(/pg_basebackup failed/);
      expect(await findBackup(servers.store, prefix(), label)).toBeUndefined();

      const manifest = await backupOf(label, 1024 * 1024);
      expect(manifest.label).toBe(label);
      expect(manifest.parts.length).toBeGreaterThan(1);
      const keys = await servers.store.list(`${prefix()}/backups/${label}/`);
      expect(keys.sort()).toEqual([...manifest.parts.map((p) => p.key), `${prefix()}/backups/${label}/manifest.json`].sort());
      const { names, label: text } = await tarContents(backupTar(servers.store, manifest));
      expect(names).toEqual(expect.arrayContaining(['backup_label', 'PG_VERSION', 'global/pg_control']));
      expect(text).toContain(`LABEL: ${label}`);
    });

    it('a finished backup is never taken again: its label gives back the same backup, its objects untouched', async () => {
      const label = `finished-${kind}`;
      const first = await backupOf(label);
      const before = await Promise.all(first.parts.map((p) => servers.store.head(p.key)));
      const again = await backupOf(label);
      expect(again).toEqual(first);
      expect(await Promise.all(first.parts.map((p) => servers.store.head(p.key)))).toEqual(before);
      expect(await servers.store.list(`${prefix()}/backups/${label}/`)).toEqual(
        [...first.parts.map((p) => p.key), `${prefix()}/backups/${label}/manifest.json`].sort(),
      );
      expect((await tarContents(backupTar(servers.store, again))).label).toContain(`LABEL: ${label}`);
    });
  });
}
