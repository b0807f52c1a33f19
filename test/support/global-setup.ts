import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { createPool } from '../../src/db.ts';
import { migrate } from '../../src/migrate.ts';
import { startEphemeralPostgres } from '../../src/pg/ephemeral.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    controlUrl: string;
  }
}

/**
 * One control Postgres for the whole run, on a free port in a temporary directory, with a
 * migrated template database; each test file clones its own database from the template.
 */
export default async function setup(project: TestProject) {
  const server = await startEphemeralPostgres();
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('create database pgfleet_template');
  await admin.end();
  const pool = createPool(server.url.replace(/\/postgres$/, '/pgfleet_template'), 2);
  await migrate(pool);
  await pool.end();
  project.provide('controlUrl', server.url);
  return async () => {
    await server.stop();
  };
}
