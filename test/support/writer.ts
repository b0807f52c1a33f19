import { ChaosWriter } from '../../src/chaos/writer.ts';

/**
 * The chaos run's writer unpaced (as fast as it can), with the moment of a fault marked: the
 * harness of the failover tests and of `bench:failover`. Its waits are bounded, as a
 * production client's are: a commit a frozen or isolated primary holds is not acknowledged,
 * and the writer moves on to a new connection.
 */
export class NumberedWriter extends ChaosWriter {
  /** When the fault was made, and when the first commit after it was acknowledged (ms, performance.now). */
  faultAt = 0;
  resumedAt = 0;

  constructor(url: string, table: string, timeouts = { connectMs: 2000, queryMs: 3000 }) {
    super(url, table, { ...timeouts, paceMs: 0 });
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

  protected override acknowledge(n: number): void {
    super.acknowledge(n);
    if (this.faultAt && !this.resumedAt) this.resumedAt = performance.now();
  }
}
