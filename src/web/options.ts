import type { Registry } from 'prom-client';
import type { Addon } from '../config.ts';
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import type { Sealer } from '../sealer.ts';
import type { ArchiveTarget } from '../store/open.ts';

/** What the web process is built from. */
export interface WebOptions {
  pool: Pool;
  log: Logger;
  operatorToken: string;
  providers: string[];
  sealer: Sealer;
  addon: Addon;
  metrics: Registry;
  /** The address the web process binds: beyond loopback, /metrics wants the operator token. */
  host: string;
  /** Where servers archive: the API lists backups from it. */
  archive: ArchiveTarget;
  /** pgfleet's CA certificate (PEM), handed to customers who check their server's certificate. */
  caCertificate: string;
}
