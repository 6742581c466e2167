/**
 * Progress for long jobs: a cli-progress bar on a TTY, plain periodic log lines
 * otherwise (CI logs, `nohup`), both with rate and ETA.
 */
import { SingleBar } from 'cli-progress';

export interface Progress {
  /** Sets the absolute count done. */
  update(done: number): void;
  /** Finishes the display (prints a final line on non-TTY). */
  stop(): void;
}

export interface ProgressOptions {
  label: string;
  total: number;
  unit?: string;
  /** Stream (default process.stderr). */
  stream?: NodeJS.WriteStream;
  /** Minimum seconds between plain log lines (default 10). */
  logEverySeconds?: number;
  /** Force plain lines even on a TTY. */
  plain?: boolean;
}

/** Seconds as `42s`, `3m05s` or `2h10m` (`?` when not finite). */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.round(s % 60).toString().padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${Math.round((s % 3600) / 60).toString().padStart(2, '0')}m`;
}

/** A progress reporter suited to where output goes. */
export function createProgress({ label, total, unit = 'items', stream = process.stderr, logEverySeconds = 10, plain = false }: ProgressOptions): Progress {
  const start = performance.now();
  if (stream.isTTY && !plain) {
    const bar = new SingleBar({
      format: `${label} [{bar}] {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`,
      stream,
      hideCursor: true,
      clearOnComplete: false,
    });
    bar.start(total, 0, { rate: '0.0' });
    return {
      update(done) {
        const seconds = (performance.now() - start) / 1000;
        bar.update(done, { rate: (done / Math.max(seconds, 1e-9)).toFixed(1) });
      },
      stop() {
        bar.stop();
      },
    };
  }
  let lastLog = start;
  let last = 0;
  const line = (done: number): void => {
    const seconds = (performance.now() - start) / 1000;
    const rate = done / Math.max(seconds, 1e-9);
    const eta = rate > 0 ? (total - done) / rate : Infinity;
    stream.write(`${label}: ${done}/${total} ${unit} (${((100 * done) / Math.max(total, 1)).toFixed(1)}%), ${rate.toFixed(1)} ${unit}/s, ETA ${formatSeconds(eta)}\n`);
  };
  return {
    update(done) {
      last = done;
      const now = performance.now();
      if (now - lastLog >= logEverySeconds * 1000) {
        lastLog = now;
        line(done);
      }
    },
    stop() {
      line(last);
    },
  };
}
