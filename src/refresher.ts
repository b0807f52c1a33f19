import type { Logger } from './log.ts';

export interface Refresher {
  /** Refresh as soon as the one under way (if any) ends, without waiting for the period. */
  now(): void;
  /** Stop, waiting for a refresh under way. */
  stop(): Promise<void>;
}

/**
 * Run `refresh` now, then every `ms` and whenever asked, one at a time (a slow one is not
 * stacked on; asked during one, it runs once more after it), logging a failure and trying
 * again at the next tick: how the router and the health checks follow the control database.
 */
export async function refreshEvery(ms: number, refresh: () => Promise<void>, log: Logger, what: string): Promise<Refresher> {
  await refresh();
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const run = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = refresh()
      .catch((err: unknown) => log.warn({ err }, `${what} failed`))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          run();
        }
      });
  };
  const timer = setInterval(run, ms);
  return {
    now: run,
    async stop() {
      stopped = true;
      clearInterval(timer);
      while (running) await running;
    },
  };
}
