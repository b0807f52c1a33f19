/** `pgfleet servers …`: the fleet's servers through the operator API. */
import type { CliTools } from './cliTools.ts';

interface ServerRow {
  id: string;
  provider: string;
  state: string;
  host: string | null;
  port: number | null;
  observedAt: string | null;
  observation: Record<string, string>;
  transitions?: { from: string | null; to: string; event: string; at: string }[];
}

function showServer(s: ServerRow, cli: CliTools): string {
  const lines = [
    `id:         ${s.id}`,
    `state:      ${s.state}`,
    `provider:   ${s.provider}`,
    `address:    ${s.host ?? '-'}:${s.port ?? '-'}`,
    `observed:   ${s.observedAt ?? 'never'}`,
    ...Object.entries(s.observation)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `  ${k.padEnd(26)} ${v}`),
  ];
  if (s.transitions?.length) {
    lines.push('', cli.table([['at', 'from', 'to', 'event'], ...s.transitions.map((t) => [t.at, t.from ?? '-', t.to, t.event])]));
  }
  return lines.join('\n');
}

export async function serversCommand(args: string[], cli: CliTools): Promise<number> {
  const [verb = 'list', ...rest] = args;
  switch (verb) {
    case 'list': {
      const rows = (await cli.api('GET', '/servers')) as ServerRow[];
      cli.print(rows, () =>
        rows.length === 0
          ? 'no servers yet: pgfleet servers create'
          : cli.table([
              ['id', 'state', 'provider', 'address', 'observed'],
              ...rows.map((s) => [s.id, s.state, s.provider, `${s.host ?? '-'}:${s.port ?? '-'}`, s.observedAt ?? 'never']),
            ]),
      );
      return 0;
    }
    case 'create': {
      const i = rest.indexOf('--provider');
      const provider = i >= 0 ? rest[i + 1] : 'local';
      if (provider === undefined || provider === '' || provider.startsWith('-'))
        throw cli.usage('usage: pgfleet servers create [--provider <name>], e.g. --provider local');
      const server = (await cli.api('POST', '/servers', { provider })) as ServerRow;
      cli.print(server, () => `created server ${server.id} (${server.state}); follow it with: pgfleet servers show ${server.id}`);
      return 0;
    }
    case 'show':
    case 'delete': {
      const id = rest[0];
      if (!id) throw cli.usage(`usage: pgfleet servers ${verb} <id>`);
      const server = (await cli.api(verb === 'show' ? 'GET' : 'DELETE', `/servers/${encodeURIComponent(id)}`)) as ServerRow;
      cli.print(server, () => (verb === 'show' ? showServer(server, cli) : `deleting server ${server.id}`));
      return 0;
    }
    default:
      throw cli.usage(`unknown servers command "${verb}": use list, create, show or delete`);
  }
}
