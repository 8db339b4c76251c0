// What an owner has set up so far, as the steps that undo it. Each undo is
// registered right where its resource is made, so a failure at any later
// step, or the owner's close, undoes everything in reverse order.

export class UndoStack {
  private readonly undos: (() => void)[] = [];

  /**
   * Runs `build` with a fresh stack. If it throws, what it registered is undone, last first, and its
   * error rethrown; on success the stack is the caller's (`build` keeps it, e.g. for a later close).
   */
  static build<T>(build: (undo: UndoStack) => T): T {
    const undo = new UndoStack();
    try {
      return build(undo);
    } catch (e) {
      // The step's failure is what the caller needs to see; an undo failing behind it changes nothing there.
      undo.unwind();
      throw e;
    }
  }

  /** Registers how to undo what was just set up. */
  defer(undo: () => void): void {
    this.undos.push(undo);
  }

  /** Registers `release` of `made` (a value just created, which cleaned up after itself if it threw) and returns it. */
  own<T>(made: T, release: (made: T) => void): T {
    this.undos.push(() => release(made));
    return made;
  }

  get size(): number {
    return this.undos.length;
  }

  /** Undoes everything, last first; one undo throwing does not stop the ones before it. Returns what they threw. */
  unwind(): unknown[] {
    const errors: unknown[] = [];
    while (this.undos.length) {
      try {
        this.undos.pop()!();
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }

  /** Unwinds, then throws the first failure, if any (the owner's close). */
  release(): void {
    const errors = this.unwind();
    if (errors.length) throw errors[0];
  }
}
