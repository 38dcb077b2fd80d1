import { randomUUID } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Script } from '../protocol/index.js';

const INTERPRETERS: Record<Script['lang'], string | null> = {
  sh: '/bin/sh',
  bash: 'bash',
  python: 'python3',
  node: process.execPath,
  bin: null,
};

/**
 * Node decides CommonJS or ES module by the extension when no package.json
 * says otherwise, and the data dir may sit inside any package: name the file
 * for the syntax it uses.
 */
function extension(lang: Script['lang'], bytes: Buffer): string {
  if (lang === 'node') return /^\s*(import|export)\s/m.test(bytes.toString('utf8')) ? '.mjs' : '.cjs';
  return { sh: '.sh', bash: '.bash', python: '.py', bin: '' }[lang];
}

export interface ScriptProgram {
  file: string;
  argv: string[];
  remove: () => Promise<void>;
}

/** Writes a script payload to a private file and says how to run it. */
export async function writeScript(script: Script, dir: string): Promise<ScriptProgram> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const bytes = 'source' in script ? Buffer.from(script.source, 'utf8') : Buffer.from(script.source_b64, 'base64');
  const path = join(dir, `${randomUUID()}${extension(script.lang, bytes)}`);
  await writeFile(path, bytes, { mode: 0o700 });
  const interpreter = INTERPRETERS[script.lang];
  return {
    file: interpreter ?? path,
    argv: interpreter ? [path] : [],
    remove: () => rm(path, { force: true }),
  };
}
