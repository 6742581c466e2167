/**
 * What `mstar extract` shows while it runs: two cli-progress bars on a TTY (the run
 * and the current slide, each with patches/s and ETA) with one line per finished
 * slide above them; elsewhere (CI logs, nohup, a pipe — where cli-progress prints
 * nothing) plain lines: one every `logEverySeconds` and one per finished slide.
 */
import { MultiBar, type SingleBar } from 'cli-progress';
import { formatSeconds } from '../progress.js';
import type { ExtractProgress, ExtractSlideOutcome } from './extract.js';

export interface ExtractDisplayOptions {
  /** Default process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Plain lines even on a TTY. */
  plain?: boolean;
  /** Seconds between plain progress lines (default 10). */
  logEverySeconds?: number;
}

export interface ExtractDisplay {
  onProgress(progress: ExtractProgress): void;
  onSlide(outcome: ExtractSlideOutcome): void;
  stop(): void;
}

/** One line describing a finished slide. */
export function describeOutcome(o: ExtractSlideOutcome): string {
  switch (o.status) {
    case 'done':
      return `done    ${o.name}: ${o.patches} patches in ${(o.seconds ?? 0).toFixed(1)}s → ${[o.h5, o.pt].filter(Boolean).join(', ')}`;
    case 'recovered':
      return `rebuilt ${o.name}: missing output rebuilt from the existing one (${o.patches} patches)`;
    case 'skipped':
      return `skipped ${o.name}: outputs exist`;
    case 'failed':
      return `FAILED  ${o.name}: ${o.error?.message} [${o.error?.code}]`;
  }
}

function progressLine(p: ExtractProgress): string {
  const pct = (100 * p.done) / Math.max(p.total, 1);
  return (
    `[${p.slideIndex + 1}/${p.slideCount}] ${p.slide} ${p.done}/${p.total} patches (${pct.toFixed(1)}%), ETA ${formatSeconds(p.slideEtaSeconds)}` +
    ` | run ${p.overallDone}/${p.overallTotal} patches, ${p.patchesPerSecond.toFixed(1)} patches/s, ETA ${formatSeconds(p.etaSeconds)}`
  );
}

export function createExtractDisplay({ stream = process.stderr, plain = false, logEverySeconds = 10 }: ExtractDisplayOptions = {}): ExtractDisplay {
  if (stream.isTTY && !plain) {
    const multi = new MultiBar({
      stream,
      hideCursor: true,
      clearOnComplete: false,
      format: '{label} [{bar}] {value}/{total} | {rate} patches/s | ETA {eta}',
      barsize: 24,
    });
    let run: SingleBar | undefined;
    let slide: SingleBar | undefined;
    let current = '';
    return {
      onProgress(p) {
        const rate = p.patchesPerSecond.toFixed(1);
        if (!run) run = multi.create(p.overallTotal, 0, { label: 'all slides'.padEnd(20), rate, eta: '?' });
        if (!slide || current !== p.slide) {
          current = p.slide;
          slide?.stop();
          if (slide) multi.remove(slide);
          slide = multi.create(p.total, 0, { label: `[${p.slideIndex + 1}/${p.slideCount}] ${p.slide}`.slice(0, 20).padEnd(20), rate, eta: '?' });
        }
        run.setTotal(p.overallTotal);
        run.update(p.overallDone, { rate, eta: formatSeconds(p.etaSeconds) });
        slide.update(p.done, { rate, eta: formatSeconds(p.slideEtaSeconds) });
      },
      onSlide(o) {
        multi.log(`${describeOutcome(o)}\n`);
      },
      stop() {
        multi.stop();
      },
    };
  }
  let lastLine = performance.now();
  let last: ExtractProgress | undefined;
  return {
    onProgress(p) {
      last = p;
      const now = performance.now();
      if (now - lastLine >= logEverySeconds * 1000) {
        lastLine = now;
        stream.write(`${progressLine(p)}\n`);
      }
    },
    onSlide(o) {
      stream.write(`${describeOutcome(o)}\n`);
    },
    stop() {
      if (last) stream.write(`${progressLine(last)}\n`);
    },
  };
}
