import pg from 'pg';

/**
 * A customer's URL as the verify-full recipe of docs/credentials-and-tls.md makes it: the server's certificate
 * must chain to pgfleet's CA (`caFile`) and name the URL's host. psql and node-postgres
 * both take it, and in both the last `sslmode` wins over the URL's `require`.
 */
export function verifyFull(url: string, caFile: string): string {
  return `${url}&sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`;
}

/** The node-postgres recipe of docs/credentials-and-tls.md: the URL without its sslmode, which would replace `ssl`, and `ssl: { ca }`. */
export function caClient(url: string, ca: string, config: pg.ClientConfig = {}): pg.Client {
  const u = new URL(url);
  u.searchParams.delete('sslmode');
  return new pg.Client({ ...config, connectionString: u.href, ssl: { ca } });
}

/**
 * Open connections one by one (`connect` makes each client) until one is refused, then
 * close them all, and `keep` too: how many got in, and what the refusal said.
 */
export async function untilRefused(
  connect: () => pg.Client,
  max: number,
  keep: pg.Client[] = [],
): Promise<{ opened: number; refused: string }> {
  const open: pg.Client[] = [];
  try {
    for (;;) {
      const client = connect();
      client.on('error', () => undefined);
      try {
        await client.connect();
      } catch (err) {
        return { opened: open.length, refused: (err as Error).message };
      }
      open.push(client);
      if (open.length > max) throw new Error(`more than ${max} connections got in: no limit`);
    }
  } finally {
    await Promise.all([...open, ...keep].map((c) => c.end()));
  }
}
