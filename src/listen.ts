import pg from 'pg';
import { backoff, type Backoff } from './backoff.ts';
import type { Pool } from './db.ts';
import type { Logger } from './log.ts';

/** Backoff of a lost LISTEN connection: 100 ms, doubling to at most a second. */
export const RECONNECT_MS: Backoff = { first: 100, most: 1000 };

export interface NotificationOptions {
  channels: string[];
  /** Heard on any of the channels. */
  onNotify: (channel: string, payload: string | undefined) => void;
  /** Connected, the first time or again: notifications sent while it was away are lost. */
  onConnected: () => void;
  log: Logger;
  /** Its name in pg_stat_activity, when others look for it there. */
  applicationName?: string;
  /** What the connection is for, in the log. */
  purpose: string;
}

/**
 * LISTEN on a connection of its own, made again with backoff whenever it is lost (the
 * control database restarted, say). Not a pool client: it lives as long as its owner, and
 * pg-pool drops a client's error handler on checkout.
 */
export class Notifications {
  private client: pg.Client | undefined;
  private stopped = false;
  /** Attempts to make the connection again that failed since it was last up. */
  private failedReconnects = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly opts: NotificationOptions,
  ) {}

  /** Connect once; a failure here is the caller's (nothing is retried yet). */
  start(): Promise<void> {
    this.stopped = false;
    return this.connect();
  }

  /** Whether the connection is up now. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      ...this.pool.options,
      ...(this.opts.applicationName ? { application_name: this.opts.applicationName } : {}),
    });
    client.on('notification', (n) => this.opts.onNotify(n.channel, n.payload));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client));
    try {
      await client.connect();
      for (const channel of this.opts.channels) await client.query(`listen ${pg.escapeIdentifier(channel)}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.stopped) {
      await client.end();
      return;
    }
    this.client = client;
    this.failedReconnects = 0;
    this.opts.onConnected();
  }

  private lost(client: pg.Client, err?: Error): void {
    if (client !== this.client) return;
    this.client = undefined;
    client.end().catch(() => undefined);
    if (this.stopped) return;
    this.opts.log.warn({ err }, `lost the LISTEN connection for ${this.opts.purpose}; making it again`);
    this.reconnect();
  }

  private reconnect(): void {
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        if (this.stopped) return;
        this.connect().catch((err: unknown) => {
          this.opts.log.debug({ err }, `making the LISTEN connection for ${this.opts.purpose} again failed`);
          this.failedReconnects += 1;
          this.reconnect();
        });
      },
      backoff(RECONNECT_MS, this.failedReconnects),
    );
  }
}
