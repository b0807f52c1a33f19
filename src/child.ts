import type { ChildProcess } from 'node:child_process';

/** A spawned child's exit code once it has closed, and what it wrote to stderr, for errors that say why. */
export function watchChild(child: ChildProcess): { exited: Promise<number | null>; stderr: () => string } {
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  return { exited, stderr: () => stderr };
}
