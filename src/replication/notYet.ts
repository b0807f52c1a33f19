/**
 * A step that cannot be done yet, for a reason that passes (the server it copies from is
 * down for a moment, the base backup it starts from is still being taken), and that left
 * things so that asking again can succeed. Its task ends and asks again, rather than
 * sleeping in place or failing towards a dead job.
 */
export class NotYet extends Error {}

/** The base backup a copy starts from is not finished: `label` of `leader`, or any when no label is named. */
export class BackupNotFinished extends NotYet {
  constructor(
    readonly leader: string,
    readonly label: string | undefined,
  ) {
    super(label ? `the backup ${label} of the leader ${leader} is not finished` : `the leader ${leader} has no base backup yet`);
  }
}
