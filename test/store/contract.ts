import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../src/store/store.ts';

export interface StoreHarness {
  store: ObjectStore;
  cleanup(): Promise<void>;
}

export interface StoreContractOptions {
  /**
   * Of writers racing to create one key, exactly one is told `written`, and the stored object is
   * that writer's. Without it (an S3-compatible server that ignores If-None-Match), at least one
   * is, and the stored body is one of theirs.
   */
  exactlyOneWriter?: boolean;
}

const sha = (body: Buffer) => createHash('sha256').update(body).digest('hex');

/** Every object store passes this suite: WAL archiving and base backups rely on nothing else. */
export function storeContract(name: string, makeStore: () => Promise<StoreHarness>, options: StoreContractOptions = {}): void {
  describe(`object store contract: ${name}`, () => {
    let h: StoreHarness;
    let store: ObjectStore;
    let n = 0;
    /** A key of its own for each test, so tests do not see each other's objects. */
    const fresh = (rest: string) => `c${++n}/${rest}`;

    beforeAll(async () => {
      h = await makeStore();
      store = h.store;
    });
    afterAll(async () => {
      await h?.cleanup();
    });

    it('returns what was put, bytes and metadata', async () => {
      const key = fresh('wal/000000010000000000000001');
      const body = randomBytes(1000);
      expect(await store.putIfAbsent(key, body, { sha256: sha(body), 'wal-timeline': '1' })).toEqual({ outcome: 'written' });
      const got = await store.get(key);
      expect(got?.body.equals(body)).toBe(true);
      expect(got?.metadata).toEqual({ sha256: sha(body), 'wal-timeline': '1' });
      expect(await store.head(key)).toEqual({ key, size: 1000, metadata: { sha256: sha(body), 'wal-timeline': '1' } });
    });

    it('keeps the first object when a second write of the key has other bytes', async () => {
      const key = fresh('segment');
      const first = Buffer.from('first bytes');
      const second = Buffer.from('second, different bytes');
      expect(await store.putIfAbsent(key, first, { sha256: sha(first) })).toEqual({ outcome: 'written' });
      expect(await store.putIfAbsent(key, second, { sha256: sha(second) })).toEqual({
        outcome: 'exists',
        existing: { key, size: first.length, metadata: { sha256: sha(first) } },
      });
      const got = await store.get(key);
      expect(got?.body.equals(first)).toBe(true);
      expect(got?.metadata).toEqual({ sha256: sha(first) });
    });

    it('reports exists for a second write of the same bytes', async () => {
      const key = fresh('segment');
      const body = Buffer.from('same bytes');
      expect(await store.putIfAbsent(key, body, { sha256: sha(body) })).toEqual({ outcome: 'written' });
      expect(await store.putIfAbsent(key, body, { sha256: sha(body) })).toEqual({
        outcome: 'exists',
        existing: { key, size: body.length, metadata: { sha256: sha(body) } },
      });
    });

    it('lists the keys under a prefix, and only those, in lexical order', async () => {
      const root = fresh('');
      const keys = [
        'wal/000000010000000000000003',
        'wal/000000010000000000000001',
        'base/20250101/base.tar',
        'walrus',
        'wal/000000010000000000000002',
        'wal/00000002.history',
      ];
      for (const key of keys) expect(await store.putIfAbsent(root + key, Buffer.from(key), {})).toEqual({ outcome: 'written' });
      expect(await store.list(`${root}wal/`)).toEqual([
        `${root}wal/000000010000000000000001`,
        `${root}wal/000000010000000000000002`,
        `${root}wal/000000010000000000000003`,
        `${root}wal/00000002.history`,
      ]);
      expect(await store.list(`${root}wal`)).toEqual([...(await store.list(`${root}wal/`)), `${root}walrus`]);
      expect(await store.list(`${root}base/`)).toEqual([`${root}base/20250101/base.tar`]);
      expect(await store.list(root)).toEqual(keys.map((k) => root + k).sort());
      expect(await store.list(`${root}nothing/`)).toEqual([]);
    });

    it('answers undefined for a key that is not there', async () => {
      expect(await store.get(fresh('missing'))).toBeUndefined();
      expect(await store.head(fresh('missing/deeper'))).toBeUndefined();
    });

    it('deletes, and deleting what is not there is fine', async () => {
      const key = fresh('doomed');
      await store.putIfAbsent(key, Buffer.from('x'), {});
      await store.delete(key);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.head(key)).toBeUndefined();
      expect(await store.list(key)).toEqual([]);
      await store.delete(key);
      expect(await store.putIfAbsent(key, Buffer.from('again'), {})).toEqual({ outcome: 'written' });
      expect((await store.get(key))?.body.toString()).toBe('again');
    });

    it('rejects keys that are not plain relative paths, and bad metadata', async () => {
      for (const key of ['../escape', 'a/../../escape', '/absolute', 'a//b', 'a/./b', '', 'a/', 'space here']) {
        await expect(store.putIfAbsent(key, Buffer.from('x'), {}), key).rejects.toThrow(/not a valid object key/);
        await expect(store.get(key), key).rejects.toThrow(/not a valid object key/);
        await expect(store.head(key), key).rejects.toThrow(/not a valid object key/);
        await expect(store.delete(key), key).rejects.toThrow(/not a valid object key/);
      }
      await expect(store.putIfAbsent(fresh('meta'), Buffer.from('x'), { Upper: 'x' })).rejects.toThrow(/lower-case key/);
      await expect(store.putIfAbsent(fresh('meta'), Buffer.from('x'), { ok: 'line\nbreak' })).rejects.toThrow(/printable ASCII/);
    });

    it('round-trips 16 MiB byte for byte, and empty metadata', async () => {
      const key = fresh('base/base.tar');
      const body = randomBytes(16 * 1024 * 1024);
      expect(await store.putIfAbsent(key, body, {})).toEqual({ outcome: 'written' });
      expect(await store.head(key)).toEqual({ key, size: body.length, metadata: {} });
      const got = await store.get(key);
      expect(got?.body.length).toBe(body.length);
      expect(got && sha(got.body)).toBe(sha(body));
      expect(got?.metadata).toEqual({});
    });

    it('lets at least one of 8 racing writers of one key write, and stores one of their bodies', async () => {
      const key = fresh('wal/000000010000000000000009');
      const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(4096, i + 1));
      const results = await Promise.all(bodies.map((body, i) => store.putIfAbsent(key, body, { writer: String(i), sha256: sha(body) })));
      const written = results.flatMap((r, i) => (r.outcome === 'written' ? [i] : []));
      if (options.exactlyOneWriter) expect(written).toHaveLength(1);
      else expect(written.length).toBeGreaterThanOrEqual(1);
      const stored = await store.get(key);
      const writer = bodies.findIndex((body) => stored?.body.equals(body));
      expect(written).toContain(writer);
      if (options.exactlyOneWriter) {
        expect(stored?.metadata).toEqual({ writer: String(writer), sha256: sha(bodies[writer]!) });
        for (const r of results) if (r.outcome === 'exists') expect(r.existing).toEqual({ key, size: 4096, metadata: stored?.metadata });
      }
    });
  });
}
