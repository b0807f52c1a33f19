/** `pgfleet jobs …`: dead jobs and their retry through the operator API. */
import type { CliTools } from './cliTools.ts';

export async function jobsCommand(args: string[], cli: CliTools): Promise<number> {
  const [verb = 'dead', id] = args;
  if (verb === 'dead') {
    const rows = (await cli.api('GET', '/jobs/dead')) as {
      id: string;
      task: string;
      entityId: string | null;
      attempts: number;
      deadAt: string;
      lastError: string | null;
    }[];
    const human = () =>
      rows.length === 0
        ? 'no dead jobs'
        : cli.table([
            ['id', 'task', 'entity', 'attempts', 'dead since', 'last error'],
            ...rows.map((j) => [j.id, j.task, j.entityId ?? '-', String(j.attempts), j.deadAt, (j.lastError ?? '').split('\n')[0]!]),
          ]);
    cli.print(rows, human);
    return 0;
  }
  if (verb === 'retry' && id) {
    await cli.api('POST', `/jobs/${encodeURIComponent(id)}/retry`);
    process.stdout.write(`job ${id} will run again\n`);
    return 0;
  }
  throw cli.usage('usage: pgfleet jobs dead | pgfleet jobs retry <id>');
}
