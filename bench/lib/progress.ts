// The one status line on stderr: which measure, which run, which server, how long so far. Rewritten in
// place on a terminal; one line per change otherwise (a log file, CI).

const started = Date.now();
let shown = '';

function elapsed(): string {
  const seconds = Math.round((Date.now() - started) / 1000);
  return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}

export function progress(text: string): void {
  const line = `[${elapsed()}] ${text}`;
  if (process.stderr.isTTY) {
    const width = process.stderr.columns > 10 ? process.stderr.columns - 1 : 119;
    process.stderr.write(`\r${line.slice(0, width).padEnd(Math.min(width, shown.length))}`);
  } else {
    process.stderr.write(`${line}\n`);
  }
  shown = line;
}

/** Ends the status line so that what is printed next starts on its own line. */
export function progressDone(): void {
  if (process.stderr.isTTY && shown !== '') process.stderr.write('\n');
  shown = '';
}
