/** Plain-text output of the CLI: aligned tables, durations, one-line error messages. */
import { ConfigError, FairsendError } from '../../services/kernel/errors.js';

/** An aligned table: numbers right-aligned, everything else left-aligned, two spaces between columns. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => String(c)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}

export function duration(ms: number): string {
  if (ms <= 0) return 'now';
  const m = Math.round(ms / 60_000);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${String(m % 60).padStart(2, '0')}m` : `${Math.floor(h / 24)}d${h % 24}h`;
}

/** One line for stderr: `fairsend: <message>`. A ValidationError's message already lists each `path: message`. */
export function errorLine(err: unknown): string {
  let message: string;
  if (err instanceof ConfigError) message = `configuration error: ${err.message}`;
  else if (err instanceof FairsendError) message = err.message;
  else if (err instanceof Error) message = err.message || err.name;
  else message = String(err);
  return `fairsend: ${message.replace(/\s*\n\s*/g, ' ')}\n`;
}
