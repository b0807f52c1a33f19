import { controlCluster, localCluster, runProcesses, type ProcessName } from './app.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { addonSecrets, existingOperatorToken } from '../control.ts';
import { addonManifest } from '../manifest.ts';
import { walMain } from '../wal/main.ts';
import { credentialsCommand } from '../credentials/cli.ts';
import { createLogger } from '../log.ts';
import { stopLocalClusters } from '../providers/local.ts';

const HELP = `pgfleet: a control plane for PostgreSQL as a service

  pgfleet start                 web, worker, clock and router in one process (the embedded default)
  pgfleet web|worker|clock|router
                                one process of the Procfile
  pgfleet migrate               apply the control database's migrations
  pgfleet servers               list servers
  pgfleet servers create [--provider local]
  pgfleet servers show <id>     a server with its latest observation and transitions
  pgfleet servers delete <id>
  pgfleet resources             list the databases customers have
  pgfleet resources show <id>   a resource with its config, servers and transitions
  pgfleet info <resource>       plan, status, connections, version, size (like heroku pg:info)
  pgfleet diagnose <resource>   connections, long queries and transactions, idle in transaction,
                                blocking, unused indexes, bloat, hit rate, xid wraparound
  pgfleet promote <resource>    switch over: its standby becomes the primary (same URL);
                                --force: also while it runs without a synchronous copy (losing what the standby lacks)
  pgfleet credentials <resource>
                                its credentials: the owner (default) and named ones
  pgfleet credentials create <resource> <name> [--read-only]
                                another login role (read-write, or SELECT only); prints its URL once
  pgfleet credentials rotate <resource> [<name>]
                                a new password: the owner's goes to the platform, a named one is printed
  pgfleet credentials destroy <resource> <name>
                                its sessions end and its role goes
  pgfleet incidents             open and recent incidents
  pgfleet incidents show <id>   an incident with its escalations and timeline
  pgfleet maintenance schedule <resource> <time>
                                restart its server at <time> (ISO, e.g. 2026-12-01T03:00Z),
                                telling its customers now
  pgfleet manifest              the addon-manifest.json a platform needs for this deployment
  pgfleet wal-push <path> --config <file>
  pgfleet wal-fetch <name> <dest> --config <file>
                                what a server's archive_command and restore_command run
                                (the config is the server's archive.json)
  pgfleet jobs dead             jobs whose attempts are spent, with their last error
  pgfleet jobs retry <id>       give a dead job a fresh set of attempts
  pgfleet down                  stop every local Postgres under PGFLEET_HOME
  pgfleet chaos --resource <id> [--resource <id> …] [--faults N] [--seed N] [--kinds a,b] [--whole-bound S]
                                a game day: seeded random Postgres faults (primary crash and
                                freeze, standby crash, walsender stall, back-to-back failovers)
                                against running ha databases, one at a time, each checked for
                                lost rows, two writable primaries and being whole again in time;
                                needs the local servers under PGFLEET_HOME and the control database

The server commands talk to the web process: PGFLEET_API_URL (default http://127.0.0.1:$PORT)
with OPERATOR_TOKEN, or the token kept under PGFLEET_HOME. Add --json for raw output.`;

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve(signal));
  });
}

async function serve(config: Config, processes: ProcessName[]): Promise<number> {
  const log = createLogger(config.logLevel, undefined, config.logFormat);
  const running = await runProcesses(config, log, processes);
  log.info({ processes, home: config.home, embeddedControl: config.databaseUrl === undefined }, 'pgfleet is running');
  if (running.url) {
    process.stdout.write(`\npgfleet ${processes.join(' + ')} listening on ${running.url}\n`);
    process.stdout.write(`operator token: ${running.operatorToken}\n`);
    process.stdout.write(`try: curl -H "Authorization: Bearer ${running.operatorToken}" ${running.url}/api/servers\n\n`);
  }
  const signal = await waitForSignal();
  log.info({ signal }, 'stopping');
  await running.stop();
  return 0;
}

async function api(config: Config, method: string, route: string, body?: unknown): Promise<unknown> {
  const base = process.env.PGFLEET_API_URL ?? `http://127.0.0.1:${config.port}`;
  // A client only reads the token: one it made up would open nothing, and would be kept.
  const token = existingOperatorToken(config.home, config.operatorToken);
  if (!token)
    throw new CliError(`no operator token: set OPERATOR_TOKEN, or PGFLEET_HOME to the home of \`pgfleet start\` (${config.home} has none)`);
  let res: Response;
  try {
    res = await fetch(`${base}/api${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new CliError(`cannot reach pgfleet at ${base}: is \`pgfleet start\` running? (set PGFLEET_API_URL to point elsewhere)`);
  }
  const payload = (await res.json().catch(() => ({}))) as { error?: string };
  if (!res.ok) throw new CliError(payload.error ?? `${method} ${route} answered ${res.status}`);
  return payload;
}

class CliError extends Error {}

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

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function showServer(s: ServerRow): string {
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
    lines.push('', table([['at', 'from', 'to', 'event'], ...s.transitions.map((t) => [t.at, t.from ?? '-', t.to, t.event])]));
  }
  return lines.join('\n');
}

/** What a command answered: as JSON with --json, else as `human` writes it for a person. */
function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
}

async function servers(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'list', ...rest] = args;
  switch (verb) {
    case 'list': {
      const rows = (await api(config, 'GET', '/servers')) as ServerRow[];
      print(json, rows, () =>
        rows.length === 0
          ? 'no servers yet: pgfleet servers create'
          : table([
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
        throw new CliError('usage: pgfleet servers create [--provider <name>], e.g. --provider local');
      const server = (await api(config, 'POST', '/servers', { provider })) as ServerRow;
      print(json, server, () => `created server ${server.id} (${server.state}); follow it with: pgfleet servers show ${server.id}`);
      return 0;
    }
    case 'show':
    case 'delete': {
      const id = rest[0];
      if (!id) throw new CliError(`usage: pgfleet servers ${verb} <id>`);
      const server = (await api(config, verb === 'show' ? 'GET' : 'DELETE', `/servers/${encodeURIComponent(id)}`)) as ServerRow;
      print(json, server, () => (verb === 'show' ? showServer(server) : `deleting server ${server.id}`));
      return 0;
    }
    default:
      throw new CliError(`unknown servers command "${verb}": use list, create, show or delete`);
  }
}

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

async function resources(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'list', id] = args;
  if (verb === 'list') {
    const rows = (await api(config, 'GET', '/resources')) as ResourceRow[];
    const human = () =>
      rows.length === 0
        ? 'no resources yet: a platform provisions them through /heroku/resources'
        : table([
            ['id', 'plan', 'state', 'name', 'servers'],
            ...rows.map((r) => [
              r.id,
              r.plan,
              r.state,
              r.name ?? '-',
              r.servers.map((s) => `${s.role}:${s.host ?? '-'}:${s.port ?? '-'}`).join(' '),
            ]),
          ]);
    print(json, rows, human);
    return 0;
  }
  if (verb === 'show' && id) {
    const r = (await api(config, 'GET', `/resources/${encodeURIComponent(id)}`)) as ResourceRow;
    const human = () =>
      [
        `id:       ${r.id}`,
        `name:     ${r.name ?? '-'}`,
        `plan:     ${r.plan} (${r.region})`,
        `state:    ${r.state}${r.lastError ? ` (last error: ${r.lastError})` : ''}`,
        ...Object.entries(r.config).map(([k, v]) => `${k}: ${v}`),
        '',
        table([
          ['server', 'role', 'state', 'address'],
          ...r.servers.map((s) => [s.id, s.role, s.state, `${s.host ?? '-'}:${s.port ?? '-'}`]),
        ]),
        '',
        table([['at', 'from', 'to', 'event'], ...(r.transitions ?? []).map((t) => [t.at, t.from ?? '-', t.to, t.event])]),
      ].join('\n');
    print(json, r, human);
    return 0;
  }
  throw new CliError('usage: pgfleet resources | pgfleet resources show <id>');
}

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

async function incidents(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'list', id] = args;
  if (verb === 'list') {
    const rows = (await api(config, 'GET', '/incidents')) as IncidentRow[];
    print(json, rows, () =>
      rows.length === 0
        ? 'no incidents'
        : table([
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
    const i = (await api(config, 'GET', `/incidents/${encodeURIComponent(id)}`)) as IncidentRow;
    print(json, i, () =>
      [
        `id:       ${i.id}`,
        `reason:   ${i.reason} (${i.kind})`,
        `state:    ${i.state}`,
        `entity:   ${i.entity.kind} ${i.entity.id} (${i.entity.state ?? '-'})`,
        `opened:   ${i.openedAt}${i.resolvedAt ? `, resolved ${i.resolvedAt}` : ''}` +
          `${i.scheduledFor ? `, scheduled for ${i.scheduledFor}` : ''}`,
        ...i.escalations.map((e) => `escalated: ${e.reason} at ${e.at}: ${e.detail}`),
        '',
        table([['at', 'what', 'from', ''], ...(i.timeline ?? []).map((e) => [e.at, e.kind, e.source, e.summary])]),
      ].join('\n'),
    );
    return 0;
  }
  throw new CliError('usage: pgfleet incidents | pgfleet incidents show <id>');
}

async function info(config: Config, id: string | undefined, json: boolean): Promise<number> {
  if (!id) throw new CliError('usage: pgfleet info <resource>');
  const i = (await api(config, 'GET', `/resources/${encodeURIComponent(id)}/info`)) as Record<string, string | number>;
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
  print(json, i, () => [`=== ${i.id}`, ...labels.map(([k, l]) => `${`${l}:`.padEnd(13)}${i[k]}`)].join('\n'));
  return 0;
}

async function diagnoseCommand(config: Config, id: string | undefined, json: boolean): Promise<number> {
  if (!id) throw new CliError('usage: pgfleet diagnose <resource>');
  const checks = (await api(config, 'GET', `/resources/${encodeURIComponent(id)}/diagnose`)) as {
    name: string;
    status: string;
    detail: string;
    rows?: Record<string, unknown>[];
  }[];
  if (json) {
    process.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
    return 0;
  }
  const order = { red: 0, yellow: 1, green: 2 } as Record<string, number>;
  for (const c of [...checks].sort((a, b) => order[a.status]! - order[b.status]!)) {
    process.stdout.write(`${c.status.toUpperCase()}: ${c.name}: ${c.detail}\n`);
    if (c.rows?.length)
      process.stdout.write(
        `${table([Object.keys(c.rows[0]!), ...c.rows.map((r) => Object.values(r).map((v) => String(v ?? '')))]).replace(/^/gm, '  ')}\n`,
      );
  }
  return 0;
}

async function maintenance(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb, resource, at] = args;
  if (verb !== 'schedule' || !resource || !at)
    throw new CliError('usage: pgfleet maintenance schedule <resource> <time>, e.g. 2026-12-01T03:00:00Z');
  const i = (await api(config, 'POST', `/resources/${encodeURIComponent(resource)}/maintenance`, { at })) as IncidentRow;
  print(json, i, () => `maintenance ${i.id} scheduled for ${i.scheduledFor}: the server restarts then, and its customers have been told`);
  return 0;
}

async function jobs(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'dead', id] = args;
  if (verb === 'dead') {
    const rows = (await api(config, 'GET', '/jobs/dead')) as {
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
        : table([
            ['id', 'task', 'entity', 'attempts', 'dead since', 'last error'],
            ...rows.map((j) => [j.id, j.task, j.entityId ?? '-', String(j.attempts), j.deadAt, (j.lastError ?? '').split('\n')[0]!]),
          ]);
    print(json, rows, human);
    return 0;
  }
  if (verb === 'retry' && id) {
    await api(config, 'POST', `/jobs/${encodeURIComponent(id)}/retry`);
    process.stdout.write(`job ${id} will run again\n`);
    return 0;
  }
  throw new CliError('usage: pgfleet jobs dead | pgfleet jobs retry <id>');
}

async function down(config: Config): Promise<number> {
  const stopped = await stopLocalClusters(config.home, localCluster(config), controlCluster(config));
  for (const dir of stopped) process.stdout.write(`stopped ${dir}\n`);
  process.stdout.write(`${stopped.length} Postgres server${stopped.length === 1 ? '' : 's'} stopped under ${config.home}\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const args = argv.filter((a) => a !== '--json');
  const [command = 'help', ...rest] = args;
  // The archiver needs no configuration of pgfleet's own: its --config file says everything.
  if (command.startsWith('wal-')) return walMain(args);
  try {
    const config = loadConfig();
    switch (command) {
      case 'start':
        return await serve(config, ['web', 'worker', 'clock', 'router']);
      case 'web':
      case 'worker':
      case 'clock':
      case 'router':
        return await serve(config, [command]);
      case 'migrate': {
        const running = await runProcesses(config, createLogger(config.logLevel, undefined, config.logFormat), []);
        await running.stop();
        process.stdout.write('migrations applied\n');
        return 0;
      }
      case 'servers':
        return await servers(config, rest, json);
      case 'jobs':
        return await jobs(config, rest, json);
      case 'resources':
        return await resources(config, rest, json);
      case 'incidents':
        return await incidents(config, rest, json);
      case 'info':
        return await info(config, rest[0], json);
      case 'credentials':
        return await credentialsCommand(rest, {
          api: (method, route, body) => api(config, method, route, body),
          print: (value, human) => print(json, value, human),
          table,
          usage: (message) => new CliError(message),
        });
      case 'diagnose':
        return await diagnoseCommand(config, rest[0], json);
      case 'maintenance':
        return await maintenance(config, rest, json);
      case 'promote': {
        if (!rest[0]) throw new CliError('usage: pgfleet promote <resource> [--force]');
        const force = rest.includes('--force');
        const r = (await api(config, 'POST', `/resources/${encodeURIComponent(rest[0])}/promote`, force ? { force } : undefined)) as {
          id: string;
          state: string;
        };
        print(json, r, () => `switching over ${r.id}: its standby becomes the primary; follow it with pgfleet resources show ${r.id}`);
        return 0;
      }
      case 'manifest': {
        const addon = { ...config.addon, ...(await addonSecrets(config.home, config.addon)) };
        process.stdout.write(`${JSON.stringify(addonManifest(addon, config.port), null, 2)}\n`);
        return 0;
      }
      case 'down':
        return await down(config);
      case 'chaos': {
        const { chaosCommand, ChaosUsageError } = await import('../chaos/gameDay.ts');
        try {
          return await chaosCommand(config, rest, (line) => process.stdout.write(`${line}\n`));
        } catch (err) {
          if (err instanceof ChaosUsageError) throw new CliError(err.message);
          throw err;
        }
      }
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(`${HELP}\n`);
        return 0;
      default:
        process.stderr.write(`unknown command "${command}"\n\n${HELP}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof CliError) {
      process.stderr.write(`pgfleet: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
