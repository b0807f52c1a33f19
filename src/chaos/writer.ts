import pg from 'pg';
import { endClient } from '../pg/endClient.ts';
import { missingRows } from './checks.ts';

const wallMs = () => performance.timeOrigin + performance.now();

/**
 * The customer of a chaos run: commits numbered rows through a database's URL for the whole
 * run, reconnecting whenever a connection fails, and remembers each acknowledged number with
 * when it was acknowledged. Its waits are bounded, as a production client's are (a commit a
 * frozen primary holds is given up after `queryMs`). Unlike the tests' NumberedWriter it
 * spans many faults and keeps the times, which the write gap is measured from; it pauses
 * `paceMs` between commits so that reading every row back after each of 100 faults stays
 * cheap (about 100 commits a second: the gap is still measured to 10 ms).
 */
export class ChaosWriter {
  readonly acknowledged: number[] = [];
  /** Wall ms of each acknowledgement, ascending, beside `acknowledged`. */
  readonly acknowledgedAt: number[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    readonly url: string,
    readonly table: string,
    private readonly opts = { connectMs: 2000, queryMs: 3000, paceMs: 10 },
  ) {}

  /** The table: `at` and `port` say when and on which server each row was written. */
  async create(): Promise<void> {
    await query(
      this.url,
      `create table if not exists ${this.table}
         (n int primary key, at timestamptz not null default clock_timestamp(), port int not null default inet_server_port())`,
    );
  }

  start(): void {
    this.loop = this.write();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  protected acknowledge(n: number): void {
    this.acknowledged.push(n);
    this.acknowledgedAt.push(wallMs());
  }

  private async write(): Promise<void> {
    let client: pg.Client | undefined;
    for (let n = 1; !this.stopped;) {
      try {
        if (!client) {
          client = new pg.Client({
            connectionString: this.url,
            connectionTimeoutMillis: this.opts.connectMs,
            query_timeout: this.opts.queryMs,
          });
          client.on('error', () => undefined);
          await client.connect();
        }
        await client.query(`insert into ${this.table} (n) values ($1)`, [n]);
        this.acknowledge(n);
        if (this.opts.paceMs > 0) await sleep(this.opts.paceMs);
      } catch {
        // Not awaited: end() on a connection that broke can wait forever.
        void client?.end().catch(() => undefined);
        client = undefined;
        await sleep(20);
      } finally {
        // A failed commit may still have happened (the primary died before answering):
        // never reuse its number, or the retry would hit the row it did commit.
        n++;
      }
    }
    if (client) await endClient(client);
  }

  /** Acknowledged numbers not in the table, read through `url` (the database's own by default). */
  async missing(url = this.url): Promise<number[]> {
    const acknowledged = [...this.acknowledged];
    const rows = await query<{ n: number }>(url, `select n from ${this.table}`, 20_000);
    return missingRows(
      acknowledged,
      rows.map((r) => r.n),
    );
  }

  /** Wall ms of the first row written after `since` on a server whose port is not `port`. */
  async firstElsewhere(since: number, port: number): Promise<number | undefined> {
    const [row] = await query<{ ms: number }>(
      this.url,
      `select (extract(epoch from at) * 1000)::float8 as ms from ${this.table}
       where at > to_timestamp(${Number(since)} / 1000.0) and port <> ${Number(port)} order by at limit 1`,
    );
    return row?.ms;
  }
}

/**
 * A read-only customer: reads through the database's read-only URL every `everyMs` and keeps
 * when each read was answered, so that a run can say how reads fared beside writes.
 */
export class ChaosReader {
  readonly answeredAt: number[] = [];
  failures = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    readonly url: string,
    readonly table: string,
    private readonly everyMs = 50,
  ) {}

  start(): void {
    this.loop = this.read();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async read(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      try {
        if (!client) {
          client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 2000, query_timeout: 3000 });
          client.on('error', () => undefined);
          await client.connect();
        }
        await client.query(`select max(n) from ${this.table}`);
        this.answeredAt.push(wallMs());
      } catch {
        this.failures++;
        void client?.end().catch(() => undefined);
        client = undefined;
      }
      await sleep(this.everyMs);
    }
    if (client) await endClient(client);
  }
}

/** One statement through a fresh connection, with bounded waits. */
export async function query<T extends pg.QueryResultRow>(url: string, text: string, timeoutMs = 5000): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await endClient(client);
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
export { wallMs };
