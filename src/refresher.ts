import type { Logger } from './log.ts';

/**
 * Run `refresh` now, then every `ms`, one at a time (a slow one is not stacked on), logging
 * a failure and trying again at the next tick: how the router and the health checks follow
 * the control database. `stop` waits for a refresh under way.
 */
export async function refreshEvery(ms: number, refresh: () => Promise<void>, log: Logger, what: string): Promise<{ stop(): Promise<void> }> {
  await refresh();
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= refresh()
      .catch((err: unknown) => log.warn({ err }, `${what} failed`))
      .finally(() => (running = undefined));
  }, ms);
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
