/** `pgfleet incidents …` and `pgfleet maintenance schedule`: incidents through the operator API. */
import type { CliTools } from './cliTools.ts';

interface IncidentRow {
  id: string;
  entity: { id: string; kind: string; state: string | null };
  kind: string;
  state: string;
  reason: string;
  openedAt: string;
  resolvedAt: string | null;
  scheduledFor: string | null;
  escalations: { reason: string; detail: string; at: string }[];
  timeline?: { at: string; kind: string; source: string; summary: string }[];
}

export async function incidentsCommand(args: string[], cli: CliTools): Promise<number> {
  const [verb = 'list', id] = args;
  if (verb === 'list') {
    const rows = (await cli.api('GET', '/incidents')) as IncidentRow[];
    cli.print(rows, () =>
      rows.length === 0
        ? 'no incidents'
        : cli.table([
            ['id', 'kind', 'state', 'entity', 'reason', 'escalations', 'opened'],
            ...rows.map((i) => [
              i.id,
              i.kind,
              i.state,
              `${i.entity.kind} ${i.entity.id}`,
              i.reason,
              [...new Set(i.escalations.map((e) => e.reason))].join(',') || '-',
              i.openedAt,
            ]),
          ]),
    );
    return 0;
  }
  if (verb === 'show' && id) {
    const i = (await cli.api('GET', `/incidents/${encodeURIComponent(id)}`)) as IncidentRow;
    cli.print(i, () =>
      [
        `id:       ${i.id}`,
        `reason:   ${i.reason} (${i.kind})`,
        `state:    ${i.state}`,
        `entity:   ${i.entity.kind} ${i.entity.id} (${i.entity.state ?? '-'})`,
        `opened:   ${i.openedAt}${i.resolvedAt ? `, resolved ${i.resolvedAt}` : ''}` +
          `${i.scheduledFor ? `, scheduled for ${i.scheduledFor}` : ''}`,
        ...i.escalations.map((e) => `escalated: ${e.reason} at ${e.at}: ${e.detail}`),
        '',
        cli.table([['at', 'what', 'from', ''], ...(i.timeline ?? []).map((e) => [e.at, e.kind, e.source, e.summary])]),
      ].join('\n'),
    );
    return 0;
  }
  throw cli.usage('usage: pgfleet incidents | pgfleet incidents show <id>');
}

export async function maintenanceCommand(args: string[], cli: CliTools): Promise<number> {
  const [verb, resource, at] = args;
  if (verb !== 'schedule' || !resource || !at)
    throw cli.usage('usage: pgfleet maintenance schedule <resource> <time>, e.g. 2026-12-01T03:00:00Z');
  const i = (await cli.api('POST', `/resources/${encodeURIComponent(resource)}/maintenance`, { at })) as IncidentRow;
  cli.print(i, () => `maintenance ${i.id} scheduled for ${i.scheduledFor}: the server restarts then, and its customers have been told`);
  return 0;
}
