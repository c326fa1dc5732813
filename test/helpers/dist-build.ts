/**
 * Tests that run the BUILT mqtt-lb (dist/) in other processes need dist/ to match src/: build with
 * `npx tsc -p .` when dist/src/cli.js is missing or older than any file under src/.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI_JS = join(ROOT, 'dist/src/cli.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

export function ensureDistBuilt(required: readonly string[] = ['dist/src/cli.js', 'dist/src/failover/worker.js']): void {
  const files = required.map((f) => join(ROOT, f));
  const newestSrc = newestMtime(join(ROOT, 'src'));
  if (files.every((f) => existsSync(f) && statSync(f).mtimeMs >= newestSrc)) return;
  try {
    execFileSync('npx', ['tsc', '-p', '.'], { cwd: ROOT, stdio: 'pipe', timeout: 180_000 });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; only a missing output is fatal.
  }
  for (const f of files) if (!existsSync(f)) throw new Error(`${f} missing after \`npx tsc -p .\``);
}
