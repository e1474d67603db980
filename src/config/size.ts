// Sizes in configuration: a number of bytes, or a string with a unit such as 512KiB, 10MiB, 10GiB (also kB, MB, GB);
// and sizes as the command line prints them.

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};
const SIZE = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i;

/** Bytes, or undefined when the value is not a size. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return parseSize(Number(trimmed));
  const match = SIZE.exec(trimmed);
  const unit = UNIT_BYTES[match?.[2]?.toLowerCase() ?? ''];
  if (!match || unit === undefined) return undefined;
  const bytes = Math.round(Number(match[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const PRINTED_UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];

/** A byte count for people: `512 bytes`, `1.5 KiB`, `3.2 GiB`. */
export function formatSize(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < PRINTED_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${PRINTED_UNITS[unit]}`;
}
