import { readFileSync, statSync } from 'node:fs';

/** A token file that cannot be used; the message names the file and what to do. */
export class TokenFileError extends Error {
  override readonly name = 'TokenFileError';
}

/**
 * The token in a token file, without the whitespace around it (`echo TOKEN >
 * file` adds a newline). The daemon also asks that the file be private and
 * the token long.
 */
export function readTokenFile(path: string, rules: { private?: boolean; minLength?: number } = {}): string {
  let token: string;
  let mode: number;
  try {
    mode = statSync(path).mode;
    token = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new TokenFileError(`cannot read --token-file ${path}: ${(error as Error).message}`);
  }
  if (rules.private && mode & 0o077) {
    throw new TokenFileError(`--token-file ${path} is readable by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
  }
  if (token === '') throw new TokenFileError(`--token-file ${path} is empty`);
  if (rules.minLength !== undefined && token.length < rules.minLength) {
    throw new TokenFileError(`--token-file ${path} holds fewer than ${rules.minLength} characters; use a long random token`);
  }
  return token;
}
