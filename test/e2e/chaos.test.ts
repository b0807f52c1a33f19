import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ChaosSystem } from '../../bench/chaos/system.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/pgfleet.js');

/** `pgfleet chaos` as an operator runs it on a game day: against a deployment that runs already. */
describe('pgfleet chaos', () => {
  it('crashes a primary of a running ha database under its writer and judges it, and refuses faults it cannot reach', async () => {
    const system = new ChaosSystem({ databases: 1, workers: 1, log: () => undefined });
    try {
      await system.start();
      // The system's own writer stops: the command brings its own.
      await Promise.all(system.databases.map((d) => d.writer.stop()));
      const env = { ...process.env, ...system.env };
      const id = system.databases[0]!.id;
      const { stdout } = await exec(
        process.execPath,
        [BIN, 'chaos', '--resource', id, '--faults', '1', '--seed', '3', '--kinds', 'primary-crash'],
        { env },
      );
      expect(stdout).toMatch(/fault 1\/1 primary-crash on .*: ok; first commit \d+ ms, whole \d+ ms/);
      expect(stdout).toContain('| primary-crash | 1 |');
      expect(stdout).toContain('no row lost, no split brain, no database stuck');

      const refused = await exec(process.execPath, [BIN, 'chaos', '--resource', id, '--kinds', 'web-killed'], { env }).catch(
        (err: { code: number; stderr: string }) => err,
      );
      expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining("needs pgfleet's processes run by the tool") });
    } finally {
      await system.stop();
    }
  }, 240_000);
});
