/**
 * Listeners run once an object is disposed (a model forgets a session it no longer has to dispose).
 * @internal
 */
export class DisposeListeners {
  readonly #listeners: (() => void)[] = [];

  add(listener: () => void): void {
    this.#listeners.push(listener);
  }

  fire(): void {
    for (const listener of this.#listeners.splice(0)) listener();
  }
}
