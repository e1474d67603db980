// The one error for a configuration that cannot be used: its message names the offending key.
// The CLI prints it and exits with status 2.

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}
