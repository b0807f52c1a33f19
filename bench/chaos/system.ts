/**
 * The deployment `npm run chaos` runs against: an ephemeral control Postgres, a stand-in
 * platform, and the Procfile layout as separate OS processes (web, two workers, clock,
 * router: `bin/pgfleet.js <name>`, each with the same environment), with `ha` databases
 * provisioned through the add-on API, each under a writer and a read-only reader.
 * Everything it starts it stops by pid or data directory, each part even when another fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { localCluster } from '../../src/processes/app.ts';
import type { ChaosDatabase } from '../../src/chaos/run.ts';
import type { Deployment, ProcessControl } from '../../src/chaos/deployment.ts';
import { ChaosReader, ChaosWriter, sleep, wallMs } from '../../src/chaos/writer.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import { createPool, type Pool } from '../../src/db.ts';
import { startEphemeralPostgres, type EphemeralPostgres } from '../../src/pg/ephemeral.ts';
import { freePort } from '../../src/pg/ports.ts';
import { stopLocalClusters } from '../../src/providers/local.ts';
import { Sealer } from '../../src/sealer.ts';
import { certificateAuthority } from '../../src/tls/authority.ts';
import { verifyFull } from '../../test/support/tls.ts';
import { provision } from '../failover/fleet.ts';
import { Platform } from '../provision/platform.ts';
import { ADDON_PASSWORD, OPERATOR_TOKEN } from '../support.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'pgfleet.js');

type Name = 'web' | 'worker' | 'clock' | 'router';

interface Child {
  name: Name;
  /** Its dyno name (`worker.2`), which a process started in its place takes again. */
  dyno: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** Killed by a fault or stopped at the end: not a crash. */
  meant: boolean;
  /** It said it runs: an exit before that fails its start instead. */
  ready: boolean;
}

/** A process that exited when nothing meant it to. */
export interface Crash {
  name: Name;
  pid: number | undefined;
  at: number;
  how: string;
  log: string;
}

export interface ChaosSystemOptions {
  databases: number;
  workers: number;
  /** Where each process's log goes (appended): kept when given, else under PGFLEET_HOME and removed. */
  logDir?: string;
  log(line: string): void;
}

export class ChaosSystem {
  deployment: Deployment | undefined;
  databases: ChaosDatabase[] = [];
  private control: EphemeralPostgres | undefined;
  private readonly platform = new Platform();
  private home: string | undefined;
  private config: Config | undefined;
  private pool: Pool | undefined;
  /** The environment pgfleet's processes run with: a CLI given it talks to this deployment. */
  env: Record<string, string> = {};
  private readonly children = new Set<Child>();
  readonly crashes: Crash[] = [];
  private spawned = 0;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: ChaosSystemOptions) {}

  async start(): Promise<void> {
    this.control = await startEphemeralPostgres();
    await this.platform.start();
    this.home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-chaos-home-'));
    await fs.chmod(this.home, 0o755);
    const port = await freePort();
    const key = randomBytes(32);
    // pgfleet's defaults, except what the environment sets: a chaos run measures the deployment as it ships.
    const passed = Object.fromEntries(
      Object.entries(process.env).filter(([k, v]) => v !== undefined && /^(PGFLEET_(?!HOME$)|PG_BIN$)/.test(k)),
    ) as Record<string, string>;
    this.env = {
      ...passed,
      DATABASE_URL: this.control.url,
      PGFLEET_HOME: this.home,
      PORT: String(port),
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'info',
      OPERATOR_TOKEN,
      PGFLEET_ENCRYPTION_KEY: key.toString('base64'),
      ADDON_PASSWORD,
      ADDON_SSO_SALT: randomBytes(24).toString('base64url'),
      ADDON_CLIENT_SECRET: 'chaos-client-secret',
      HEROKU_API_URL: this.platform.url,
      HEROKU_ID_URL: this.platform.url,
    };
    this.config = loadConfig(this.env);
    this.opts.logDir ??= path.join(this.home, 'logs');
    await fs.mkdir(this.opts.logDir, { recursive: true });
    this.pool = createPool(this.control.url, 5);
    this.pool.on('error', () => undefined);

    // web first: it migrates the control database before the others look at it.
    await this.spawn('web');
    await Promise.all([
      ...Array.from({ length: this.opts.workers }, (_, i) => this.spawn('worker', `worker.${i + 1}`)),
      this.spawn('clock'),
      this.spawn('router'),
    ]);
    const apiUrl = `http://127.0.0.1:${port}`;
    this.deployment = {
      apiUrl,
      token: OPERATOR_TOKEN,
      pool: this.pool,
      sealer: new Sealer(key),
      home: this.home,
      processes: this.processControl(),
    };

    const caFile = path.join(this.home, 'pgfleet-ca.pem');
    await fs.writeFile(caFile, (await certificateAuthority(this.pool, this.deployment.sealer)).certificate);
    for (let i = 0; i < this.opts.databases; i++) {
      this.opts.log(`provisioning ha database ${i + 1}/${this.opts.databases}…`);
      const { id, url } = await provision({ url: apiUrl }, this.platform, 'ha', 180_000);
      const shown = (await (
        await fetch(`${apiUrl}/api/resources/${id}`, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } })
      ).json()) as { config: Record<string, string> };
      const readOnly = Object.entries(shown.config).find(([k]) => k.endsWith('_READONLY_URL'))?.[1];
      const writer = new ChaosWriter(verifyFull(url, caFile), 'chaos_writes');
      await writer.create();
      writer.start();
      const reader = readOnly ? new ChaosReader(verifyFull(readOnly, caFile), 'chaos_writes') : undefined;
      reader?.start();
      this.databases.push({ id, writer, ...(reader ? { reader } : {}) });
    }
  }

  /**
   * Start one process of the Procfile, its output to a log file of its own, and wait until it
   * says it runs. One that exits when nothing meant it to is a crash: recorded, and started
   * again a second later, as a supervisor would.
   */
  private async spawn(name: Name, dyno = `${name}.1`): Promise<void> {
    // A fault under way when the run is stopped must not start what the stop would miss.
    if (this.stopping) throw new Error(`not starting pgfleet ${name}: stopping`);
    const logFile = path.join(this.opts.logDir!, `${name}-${++this.spawned}.log`);
    const fd = openSync(logFile, 'a');
    // Named as Heroku names dynos: a worker started again under its name releases at once
    // what the one before it held (src/queue/worker.ts).
    const child = spawn(process.execPath, [BIN, name], { env: { ...process.env, ...this.env, DYNO: dyno }, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const entry: Child = { name, dyno, child, exited: Promise.resolve(), meant: false, ready: false };
    entry.exited = new Promise<void>((resolve) =>
      child.once('exit', (code, signal) => {
        this.children.delete(entry);
        if (entry.ready && !entry.meant && !this.stopping) {
          this.crashes.push({
            name,
            pid: child.pid,
            at: wallMs(),
            how: signal ? `killed by ${signal}` : `exit code ${code}`,
            log: path.basename(logFile),
          });
          this.opts.log(
            `chaos: pgfleet ${name} (pid ${child.pid}) exited by itself (${signal ?? code}): started again, like a supervisor would; ` +
              `see ${logFile}`,
          );
          void this.respawn(name, dyno);
        }
        resolve();
      }),
    );
    this.children.add(entry);
    for (const deadline = Date.now() + 60_000; ;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgfleet ${name} exited at start: see ${logFile}`);
      const text = await fs.readFile(logFile, 'utf8');
      if (text.includes('pgfleet is running')) {
        entry.ready = true;
        return;
      }
      if (Date.now() > deadline) throw new Error(`pgfleet ${name} did not start within 60 s: see ${logFile}`);
      await sleep(50);
    }
  }

  private async respawn(name: Name, dyno: string): Promise<void> {
    while (!this.stopping) {
      await sleep(1000);
      if (this.stopping) return;
      try {
        return await this.spawn(name, dyno);
      } catch (err) {
        this.opts.log(`chaos: starting pgfleet ${name} again failed: ${(err as Error).message}`);
      }
    }
  }

  private async kill(entry: Child): Promise<void> {
    entry.meant = true;
    entry.child.kill('SIGKILL');
    await entry.exited;
  }

  private processControl(): ProcessControl {
    return {
      killAndRestart: async (name) => {
        const entry = [...this.children].find((c) => c.name === name);
        if (!entry) throw new Error(`no ${name} process is running`);
        await this.kill(entry);
        await this.spawn(name, entry.dyno);
      },
      killWorker: async (dyno) => {
        const entry = [...this.children].find((c) => c.name === 'worker' && c.dyno === dyno);
        if (!entry) return false;
        await this.kill(entry);
        await this.spawn('worker', entry.dyno);
        return true;
      },
      crashes: (from, to) =>
        this.crashes.filter((c) => c.at >= from && c.at <= to).map((c) => `pgfleet ${c.name} (pid ${c.pid}) crashed: ${c.how} (${c.log})`),
      restartControl: async () => {
        const dataDir = path.join(this.control!.dir, 'data');
        await this.control!.cluster.stop(dataDir, 'immediate');
        await this.control!.cluster.start(dataDir);
      },
    };
  }

  /** Stop everything started, each part even when another fails; safe to call at any time and more than once. */
  stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      const attempt = async (what: string, fn: () => Promise<unknown>) => {
        try {
          await fn();
        } catch (err) {
          this.opts.log(`chaos: ${what} failed: ${(err as Error).message}`);
        }
      };
      for (const db of this.databases) await attempt('stopping a writer', async () => Promise.all([db.writer.stop(), db.reader?.stop()]));
      await attempt('stopping pgfleet', () =>
        Promise.all(
          [...this.children].map(async (c) => {
            c.meant = true;
            c.child.kill('SIGTERM');
            const timer = setTimeout(() => c.child.kill('SIGKILL'), 10_000);
            await c.exited;
            clearTimeout(timer);
          }),
        ),
      );
      await attempt('closing the control pool', async () => this.pool?.end());
      if (this.home && this.config)
        await attempt('stopping local clusters', () => stopLocalClusters(this.home!, localCluster(this.config!)));
      await attempt('stopping the platform', () => this.platform.stop());
      await attempt('stopping the control Postgres', async () => this.control?.stop());
      if (this.home) await attempt('removing PGFLEET_HOME', () => fs.rm(this.home!, { recursive: true, force: true }));
    })());
  }
}
