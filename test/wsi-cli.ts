/**
 * The whole-slide subcommands as a standalone program, for tests that run them in a
 * child process (`node --import h5wasm/node --import tsx test/wsi-cli.ts extract ...`;
 * preloading h5wasm keeps tsx from transforming it) until lib/cli.ts carries them;
 * errors print like lib/cli.ts `main` (message, code, exit status 1).
 */
import { Command } from 'commander';
import { extractCommand, heatmapCommand, tileCommand } from '../lib/cli/wsi.js';

const program = new Command('mstar').addCommand(tileCommand()).addCommand(extractCommand()).addCommand(heatmapCommand());
try {
  await program.parseAsync(process.argv);
} catch (error) {
  const e = error as Error & { code?: string };
  console.error(`mstar: ${e.message}${e.code?.startsWith('ERR_') ? ` [${e.code}]` : ''}`);
  process.exitCode = 1;
}
