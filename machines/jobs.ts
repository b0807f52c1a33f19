/**
 * A job a machine asks for, emitted as an event (`emit({ type: 'job', … })`): the runner
 * enqueues it in the transaction that stores the transition, so a decision and its
 * consequences cannot be separated by a crash.
 */
export interface JobEmitted<Task extends string = string> {
  type: 'job';
  task: Task;
  delaySeconds?: number;
}

/** What a machine's `job` action is given: the task, and a delay when it must wait. */
export interface JobParams<Task extends string> {
  task: Task;
  delaySeconds?: number;
}

/** The `job` action with its task, for a state's entry or a transition's actions. */
export function job<Task extends string>(task: Task, delaySeconds?: number): { type: 'job'; params: JobParams<Task> } {
  return { type: 'job', params: { task, ...(delaySeconds ? { delaySeconds } : {}) } };
}

/** The job a `job` action emits: delayed only when its params ask for a delay. */
export function jobEmitted<Task extends string>(params: JobParams<Task>): JobEmitted<Task> {
  return { type: 'job', task: params.task, ...(params.delaySeconds ? { delaySeconds: params.delaySeconds } : {}) };
}
