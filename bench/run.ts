/**
 * `npm run bench -- [name...]`: runs bench/<name>.ts in turn (all when no name is given).
 * Each benchmark checks its result first, then prints its figures and the ratio to its anchor.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'anchors.ts'].includes(f))
  .map((f) => f.slice(0, -3))
  .sort();

// Names select benchmarks; flags (`--threads 2` or `--threads=2`) go to each of them.
const args = process.argv.slice(2);
const names: string[] = [];
const flags: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (!a.startsWith('-')) {
    names.push(a);
    continue;
  }
  flags.push(a);
  const next = args[i + 1];
  if (!a.includes('=') && next !== undefined && !next.startsWith('-') && !available.includes(next)) flags.push(args[++i]);
}
const selected = names.length > 0 ? names : available;
const unknown = selected.filter((n) => !available.includes(n));
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${available.join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const name of selected) {
  console.log(`\n== bench ${name}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, `${name}.ts`), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
