import pg from 'pg';

/**
 * A client that commits numbered rows (`insert into <table> values (n)`) through a URL as
 * fast as it can, reconnecting whenever a connection fails, and remembers which commits
 * were acknowledged: the harness of the failover tests and of `bench:failover`.
 *
 * Its waits are bounded, as a production client's are: a commit a frozen or isolated
 * primary holds is not acknowledged, and the writer moves on to a new connection.
 */
export class NumberedWriter {
  readonly acknowledged: number[] = [];
  /** When the fault was made, and when the first commit after it was acknowledged (ms, performance.now). */
  faultAt = 0;
  resumedAt = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly url: string,
    private readonly table: string,
    private readonly timeouts = { connectMs: 2000, queryMs: 3000 },
  ) {}

  start(): void {
    this.loop = this.write();
  }

  /** Mark the moment of the fault: `resumedAt` is the first acknowledgement after it. */
  fault(): void {
    this.faultAt = performance.now();
    this.resumedAt = 0;
  }

  /** Milliseconds from the fault to the first acknowledged commit after it. */
  get recoveryMs(): number | undefined {
    return this.resumedAt ? this.resumedAt - this.faultAt : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async write(): Promise<void> {
    let client: pg.Client | undefined;
    for (let n = 1; !this.stopped; ) {
      try {
        if (!client) {
          client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.timeouts.connectMs, query_timeout: this.timeouts.queryMs });
          client.on('error', () => undefined);
          await client.connect();
        }
        await client.query(`insert into ${this.table} values ($1)`, [n]);
        this.acknowledged.push(n);
        if (this.faultAt && !this.resumedAt) this.resumedAt = performance.now();
      } catch {
        // Not awaited: end() on a connection that broke can wait forever.
        void client?.end().catch(() => undefined);
        client = undefined;
        await new Promise((r) => setTimeout(r, 20));
      } finally {
        // A failed commit may still have happened (the primary died before answering):
        // never reuse its number, or the retry would hit the row it did commit.
        n++;
      }
    }
    await client?.end().catch(() => undefined);
  }

  /** Acknowledged numbers that are not in the table now, read through `url`. */
  async missing(url = this.url): Promise<number[]> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: number }>(
        `select a.n from unnest($1::int[]) a(n) where not exists (select 1 from ${this.table} t where t.n = a.n)`,
        [this.acknowledged],
      );
      return rows.map((r) => r.n);
    } finally {
      await client.end();
    }
  }
}
