/**
 * A small state machine whose transitions are checked: each complex module of the scheduler
 * declares its states and allowed transitions as a table, and every change of state goes through
 * `to()`, which throws InvalidTransitionError on a transition the table does not have. So the
 * diagram at the top of a module is also the code that enforces it.
 */
import { InvalidTransitionError } from '../kernel/errors.js';

export type Transitions<S extends string> = { readonly [K in S]: readonly S[] };

export class StateMachine<S extends string> {
  private current: S;

  constructor(
    readonly name: string,
    private readonly edges: Transitions<S>,
    initial: S,
  ) {
    this.current = initial;
  }

  get state(): S {
    return this.current;
  }

  is(...states: S[]): boolean {
    return states.includes(this.current);
  }

  /** Moves to `next`; throws InvalidTransitionError when the table does not allow it. */
  to(next: S): void {
    if (!this.edges[this.current].includes(next)) throw new InvalidTransitionError(this.name, this.current, next);
    this.current = next;
  }
}
