/** A retry curve: the wait before the first retry, doubled with each failure after it, up to a ceiling. */
export interface Backoff {
  first: number;
  most: number;
}

/**
 * The wait before retry `retry` (0 for the first) on `curve`, in the curve's unit. Pure, so
 * machines use it as the queue and the LISTEN connection do; each caller picks its numbers.
 */
export function backoff(curve: Backoff, retry: number): number {
  return Math.min(curve.first * 2 ** Math.max(retry, 0), curve.most);
}
