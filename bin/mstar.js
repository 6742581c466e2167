#!/usr/bin/env node
// The `mstar` command. The TypeScript sources are compiled to dist/ at install
// (npm's `prepare`), so this file only hands over to the compiled CLI.
import('../dist/cli.js').then((cli) => cli.main(process.argv)).catch((error) => {
  if (error && error.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/cli.js')) {
    console.error('mstar: dist/ is missing; run `npm run build` in the package folder.');
  } else {
    console.error(`mstar: ${error && error.stack ? error.stack : error}`);
  }
  process.exitCode = 1;
});
