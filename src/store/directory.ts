import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkKey, checkMetadata, type ObjectInfo, type ObjectStore, type StoredObject } from './store.ts';

/**
 * A directory as an object store: each object one file, its metadata as a first JSON line
 * before the bytes. A write goes to a temporary file, is fsynced, then linked into place
 * with `link(2)`, which fails if the name exists: two writers of one key cannot both win,
 * and a crash leaves no half-written object under its real name.
 */
export class DirectoryStore implements ObjectStore {
  readonly description: string;

  constructor(private readonly root: string) {
    this.description = `directory ${root}`;
  }

  private file(key: string): string {
    checkKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  async putIfAbsent(
    key: string,
    body: Buffer,
    metadata: Record<string, string>,
  ): Promise<{ outcome: 'written' } | { outcome: 'exists'; existing: ObjectInfo }> {
    checkMetadata(metadata);
    const file = this.file(key);
    const existing = await this.head(key);
    if (existing) return { outcome: 'exists', existing };
    await fs.mkdir(path.dirname(file), { recursive: true });
    const tmp = path.join(path.dirname(file), `.tmp-${randomBytes(6).toString('hex')}`);
    const handle = await fs.open(tmp, 'wx', 0o640);
    try {
      await handle.writeFile(Buffer.concat([Buffer.from(`${JSON.stringify(metadata)}\n`), body]));
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await fs.link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return { outcome: 'exists', existing: (await this.head(key))! };
    } finally {
      await fs.rm(tmp, { force: true });
    }
    const dir = await fs.open(path.dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    return { outcome: 'written' };
  }

  async get(key: string): Promise<StoredObject | undefined> {
    const raw = await fs.readFile(this.file(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!raw) return undefined;
    const end = raw.indexOf(10);
    return { metadata: JSON.parse(raw.subarray(0, end).toString('utf8')) as Record<string, string>, body: raw.subarray(end + 1) };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(this.file(key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const { size } = await handle.stat();
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(Math.min(size, 64 * 1024)), 0, Math.min(size, 64 * 1024), 0);
      const end = buffer.subarray(0, bytesRead).indexOf(10);
      if (end < 0) throw new Error(`${this.file(key)} is not an object of this store`);
      return { key, size: size - end - 1, metadata: JSON.parse(buffer.subarray(0, end).toString('utf8')) as Record<string, string> };
    } finally {
      await handle.close();
    }
  }

  async list(prefix: string): Promise<string[]> {
    const entries = await fs.readdir(this.root, { recursive: true, withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isFile() && !e.name.startsWith('.tmp-'))
      .map((e) => path.relative(this.root, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
      .filter((key) => key.startsWith(prefix))
      .sort();
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.file(key), { force: true });
  }
}
