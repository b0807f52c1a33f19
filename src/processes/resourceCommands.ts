/** `pgfleet resources …`, `info`, `diagnose` and `promote`: customers' databases through the operator API. */
import type { CliTools } from './cliTools.ts';

interface ResourceRow {
  id: string;
  plan: string;
  region: string;
  name: string | null;
  state: string;
  lastError: string | null;
  config: Record<string, string>;
  servers: { id: string; role: string; state: string; host: string | null; port: number | null }[];
  transitions?: { from: string | null; to: string; event: string; at: string }[];
}

export async function resourcesCommand(args: string[], cli: CliTools): Promise<number> {
  const [verb = 'list', id] = args;
  if (verb === 'list') {
    const rows = (await cli.api('GET', '/resources')) as ResourceRow[];
    const human = () =>
      rows.length === 0
        ? 'no resources yet: a platform provisions them through /heroku/resources'
        : cli.table([
            ['id', 'plan', 'state', 'name', 'servers'],
            ...rows.map((r) => [
              r.id,
              r.plan,
              r.state,
              r.name ?? '-',
              r.servers.map((s) => `${s.role}:${s.host ?? '-'}:${s.port ?? '-'}`).join(' '),
            ]),
          ]);
    cli.print(rows, human);
    return 0;
  }
  if (verb === 'show' && id) {
    const r = (await cli.api('GET', `/resources/${encodeURIComponent(id)}`)) as ResourceRow;
    const human = () =>
      [
        `id:       ${r.id}`,
        `name:     ${r.name ?? '-'}`,
        `plan:     ${r.plan} (${r.region})`,
        `state:    ${r.state}${r.lastError ? ` (last error: ${r.lastError})` : ''}`,
        ...Object.entries(r.config).map(([k, v]) => `${k}: ${v}`),
        '',
        cli.table([
          ['server', 'role', 'state', 'address'],
          ...r.servers.map((s) => [s.id, s.role, s.state, `${s.host ?? '-'}:${s.port ?? '-'}`]),
        ]),
        '',
        cli.table([['at', 'from', 'to', 'event'], ...(r.transitions ?? []).map((t) => [t.at, t.from ?? '-', t.to, t.event])]),
      ].join('\n');
    cli.print(r, human);
    return 0;
  }
  throw cli.usage('usage: pgfleet resources | pgfleet resources show <id>');
}

export async function infoCommand(id: string | undefined, cli: CliTools): Promise<number> {
  if (!id) throw cli.usage('usage: pgfleet info <resource>');
  const i = (await cli.api('GET', `/resources/${encodeURIComponent(id)}/info`)) as Record<string, string | number>;
  const labels: [string, string][] = [
    ['plan', 'Plan'],
    ['status', 'Status'],
    ['connections', 'Connections'],
    ['pgVersion', 'PG Version'],
    ['created', 'Created'],
    ['dataSize', 'Data Size'],
    ['tables', 'Tables'],
    ['region', 'Region'],
    ['server', 'Server'],
  ];
  cli.print(i, () => [`=== ${i.id}`, ...labels.map(([k, l]) => `${`${l}:`.padEnd(13)}${i[k]}`)].join('\n'));
  return 0;
}

export async function diagnoseCommand(id: string | undefined, cli: CliTools): Promise<number> {
  if (!id) throw cli.usage('usage: pgfleet diagnose <resource>');
  const checks = (await cli.api('GET', `/resources/${encodeURIComponent(id)}/diagnose`)) as {
    name: string;
    status: string;
    detail: string;
    rows?: Record<string, unknown>[];
  }[];
  const order = { red: 0, yellow: 1, green: 2 } as Record<string, number>;
  // The API answers every check, so the text is never empty.
  cli.print(checks, () =>
    [...checks]
      .sort((a, b) => order[a.status]! - order[b.status]!)
      .flatMap((c) => [
        `${c.status.toUpperCase()}: ${c.name}: ${c.detail}`,
        ...(c.rows?.length
          ? [cli.table([Object.keys(c.rows[0]!), ...c.rows.map((r) => Object.values(r).map((v) => String(v ?? '')))]).replace(/^/gm, '  ')]
          : []),
      ])
      .join('\n'),
  );
  return 0;
}

export async function promoteCommand(args: string[], cli: CliTools): Promise<number> {
  const [id] = args;
  if (!id) throw cli.usage('usage: pgfleet promote <resource> [--force]');
  const force = args.includes('--force');
  const r = (await cli.api('POST', `/resources/${encodeURIComponent(id)}/promote`, force ? { force } : undefined)) as {
    id: string;
    state: string;
  };
  cli.print(r, () => `switching over ${r.id}: its standby becomes the primary; follow it with pgfleet resources show ${r.id}`);
  return 0;
}
