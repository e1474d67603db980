// Which v1 repositories hold which images: a repository holds every image its tags reach through their ancestry.
// Kept in memory, both ways (image → repositories, repository → images); a repository's share is read again whole
// after each write to it, one read at a time per repository, so the last read always follows the last write.

export class ImageHolders {
  private readonly byImage = new Map<string, Set<string>>();
  private readonly byRepository = new Map<string, ReadonlySet<string>>();
  /** The refresh in progress (or last done) per repository: the next one waits for it. */
  private readonly refreshes = new Map<string, Promise<void>>();

  /** The repositories (as `namespace/name`) that hold an image, in lexical order. */
  holdersOf(id: string): string[] {
    return [...(this.byImage.get(id) ?? [])].sort();
  }

  holds(repository: string, id: string): boolean {
    return this.byRepository.get(repository)?.has(id) === true;
  }

  /** Sets what a repository holds (nothing: it is forgotten). */
  replace(repository: string, images: Iterable<string>): void {
    for (const id of this.byRepository.get(repository) ?? []) {
      const holders = this.byImage.get(id);
      holders?.delete(repository);
      if (holders?.size === 0) this.byImage.delete(id);
    }
    const held = new Set(images);
    if (held.size === 0) this.byRepository.delete(repository);
    else this.byRepository.set(repository, held);
    for (const id of held) {
      const holders = this.byImage.get(id) ?? new Set<string>();
      holders.add(repository);
      this.byImage.set(id, holders);
    }
  }

  /**
   * Reads what a repository holds and records it, after any refresh of it still running: a refresh asked after a
   * write reads what that write left. A failed read leaves the last record (and is the caller's to report).
   */
  refresh(repository: string, read: () => Promise<Iterable<string>>): Promise<void> {
    const previous = this.refreshes.get(repository) ?? Promise.resolve();
    const next = previous.then(async () => this.replace(repository, await read()));
    const settled = next.catch(() => undefined);
    this.refreshes.set(repository, settled);
    void settled.then(() => {
      if (this.refreshes.get(repository) === settled) this.refreshes.delete(repository);
    });
    return next;
  }
}
