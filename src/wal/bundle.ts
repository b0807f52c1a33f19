import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ENTRY = fileURLToPath(new URL('./bin.ts', import.meta.url));

const built = new Map<string, Promise<string>>();

/**
 * The archiver that Postgres runs from `archive_command` and `restore_command`, bundled
 * into one file under PGFLEET_HOME/bin: Postgres runs as its own user, which can reach
 * PGFLEET_HOME but not necessarily this checkout or its node_modules. Built once per
 * process, so it always matches the running code.
 */
export function archiverBundle(home: string): Promise<string> {
  const existing = built.get(home);
  if (existing) return existing;
  const making = (async () => {
    const dir = path.join(home, 'bin');
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    await fs.chmod(dir, 0o755);
    const out = path.join(dir, 'pgfleet-wal.cjs');
    const tmp = `${out}.${process.pid}.tmp`;
    await build({
      entryPoints: [ENTRY],
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      outfile: tmp,
      logLevel: 'silent',
      legalComments: 'none',
    });
    await fs.chmod(tmp, 0o755);
    await fs.rename(tmp, out);
    return out;
  })().catch((err: unknown) => {
    built.delete(home);
    throw err;
  });
  built.set(home, making);
  return making;
}
