import { runProcesses, localCluster, type ProcessName } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { addonSecrets, operatorToken } from './control.ts';
import { addonManifest } from './manifest.ts';
import { createLogger } from './log.ts';
import { stopLocalClusters } from './providers/local.ts';

const HELP = `pgfleet: a control plane for PostgreSQL as a service

  pgfleet start                 web, worker and clock in one process (the embedded default)
  pgfleet web|worker|clock      one process of the Procfile
  pgfleet migrate               apply the control database's migrations
  pgfleet servers               list servers
  pgfleet servers create [--provider local]
  pgfleet servers show <id>     a server with its latest observation and transitions
  pgfleet servers delete <id>
  pgfleet resources             list the databases customers have
  pgfleet resources show <id>   a resource with its config, servers and transitions
  pgfleet manifest              the addon-manifest.json a platform needs for this deployment
  pgfleet jobs dead             jobs whose attempts are spent, with their last error
  pgfleet jobs retry <id>       give a dead job a fresh set of attempts
  pgfleet down                  stop every local Postgres under PGFLEET_HOME

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
  const token = await operatorToken(config.home, config.operatorToken);
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
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
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

async function servers(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'list', ...rest] = args;
  const print = (value: unknown, human: () => string) => process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
  switch (verb) {
    case 'list': {
      const rows = (await api(config, 'GET', '/servers')) as ServerRow[];
      print(rows, () =>
        rows.length === 0
          ? 'no servers yet: pgfleet servers create'
          : table([['id', 'state', 'provider', 'address', 'observed'], ...rows.map((s) => [s.id, s.state, s.provider, `${s.host ?? '-'}:${s.port ?? '-'}`, s.observedAt ?? 'never'])]),
      );
      return 0;
    }
    case 'create': {
      const i = rest.indexOf('--provider');
      const provider = i >= 0 ? rest[i + 1] : 'local';
      const server = (await api(config, 'POST', '/servers', { provider })) as ServerRow;
      print(server, () => `created server ${server.id} (${server.state}); follow it with: pgfleet servers show ${server.id}`);
      return 0;
    }
    case 'show':
    case 'delete': {
      const id = rest[0];
      if (!id) throw new CliError(`usage: pgfleet servers ${verb} <id>`);
      const server = (await api(config, verb === 'show' ? 'GET' : 'DELETE', `/servers/${encodeURIComponent(id)}`)) as ServerRow;
      print(server, () => (verb === 'show' ? showServer(server) : `deleting server ${server.id}`));
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
        : table([['id', 'plan', 'state', 'name', 'servers'], ...rows.map((r) => [r.id, r.plan, r.state, r.name ?? '-', r.servers.map((s) => `${s.role}:${s.host ?? '-'}:${s.port ?? '-'}`).join(' ')])]);
    process.stdout.write(`${json ? JSON.stringify(rows, null, 2) : human()}\n`);
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
        table([['server', 'role', 'state', 'address'], ...r.servers.map((s) => [s.id, s.role, s.state, `${s.host ?? '-'}:${s.port ?? '-'}`])]),
        '',
        table([['at', 'from', 'to', 'event'], ...(r.transitions ?? []).map((t) => [t.at, t.from ?? '-', t.to, t.event])]),
      ].join('\n');
    process.stdout.write(`${json ? JSON.stringify(r, null, 2) : human()}\n`);
    return 0;
  }
  throw new CliError('usage: pgfleet resources | pgfleet resources show <id>');
}

async function jobs(config: Config, args: string[], json: boolean): Promise<number> {
  const [verb = 'dead', id] = args;
  if (verb === 'dead') {
    const rows = (await api(config, 'GET', '/jobs/dead')) as { id: string; task: string; entityId: string | null; attempts: number; deadAt: string; lastError: string | null }[];
    const human = () =>
      rows.length === 0
        ? 'no dead jobs'
        : table([['id', 'task', 'entity', 'attempts', 'dead since', 'last error'], ...rows.map((j) => [j.id, j.task, j.entityId ?? '-', String(j.attempts), j.deadAt, (j.lastError ?? '').split('\n')[0]!])]);
    process.stdout.write(`${json ? JSON.stringify(rows, null, 2) : human()}\n`);
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
  const stopped = await stopLocalClusters(config.home, localCluster(config));
  for (const dir of stopped) process.stdout.write(`stopped ${dir}\n`);
  process.stdout.write(`${stopped.length} Postgres server${stopped.length === 1 ? '' : 's'} stopped under ${config.home}\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const args = argv.filter((a) => a !== '--json');
  const [command = 'help', ...rest] = args;
  try {
    const config = loadConfig();
    switch (command) {
      case 'start':
        return await serve(config, ['web', 'worker', 'clock']);
      case 'web':
      case 'worker':
      case 'clock':
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
      case 'manifest': {
        const addon = { ...config.addon, ...(await addonSecrets(config.home, config.addon)) };
        process.stdout.write(`${JSON.stringify(addonManifest(addon, config.port), null, 2)}\n`);
        return 0;
      }
      case 'down':
        return await down(config);
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
