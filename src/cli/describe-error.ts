// An error as one line for the terminal: its message, then its causes' (a StorageError says what failed,
// the system's error why), without stacks.

export function describeError(error: unknown): string {
  const parts: string[] = [];
  for (let current = error; current !== undefined && parts.length < 4; current = current instanceof Error ? current.cause : undefined) {
    parts.push(current instanceof Error ? current.message : JSON.stringify(current));
  }
  return parts.join(': ');
}
