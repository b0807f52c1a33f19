import { controlCluster, localCluster, runProcesses, type ProcessName } from './app.ts';
import { CliError, cliTools } from './cliTools.ts';
import { incidentsCommand, maintenanceCommand } from './incidentCommands.ts';
import { jobsCommand } from './jobCommands.ts';
import { diagnoseCommand, infoCommand, promoteCommand, resourcesCommand } from './resourceCommands.ts';
import { serversCommand } from './serverCommands.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { addonSecrets } from '../control.ts';
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
    const cli = cliTools(config, json);
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
        return await serversCommand(rest, cli);
      case 'jobs':
        return await jobsCommand(rest, cli);
      case 'resources':
        return await resourcesCommand(rest, cli);
      case 'incidents':
        return await incidentsCommand(rest, cli);
      case 'info':
        return await infoCommand(rest[0], cli);
      case 'credentials':
        return await credentialsCommand(rest, cli);
      case 'diagnose':
        return await diagnoseCommand(rest[0], cli);
      case 'maintenance':
        return await maintenanceCommand(rest, cli);
      case 'promote':
        return await promoteCommand(rest, cli);
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
