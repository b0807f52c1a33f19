import type pg from 'pg';

/**
 * How long a server has to close its end of a connection after the client said goodbye. A
 * live one closes it at once (well under a millisecond on one machine); one whose backend is
 * stopped (SIGSTOP: a hang) never does, since its kernel takes the goodbye and nothing reads it.
 */
export const GOODBYE_MS = 1000;

/**
 * End a client's connection to a server, and drop its socket if the server has not closed
 * its end within `withinMs`. pg's `end()` sends Terminate and waits for the socket to close:
 * forever, when the server froze after its last answer. bench:failover run 40 of 40 (a
 * primary hung among 30 other servers) saw no transition in 60 s: an observation whose
 * connection the primary froze on had its answer and waited on `end()`, holding the server's
 * observation lane, so nothing observed it again. Never throws.
 */
export async function endClient(client: pg.Client, withinMs = GOODBYE_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const closed = await Promise.race([
    client.end().then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), withinMs))),
  ]);
  clearTimeout(timer);
  if (!closed) client.connection.stream.destroy();
}
