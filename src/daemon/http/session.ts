import { createHmac } from 'node:crypto';

/**
 * The dashboard's cookie holds a value made from the token, not the token:
 * whoever reads the cookie jar learns no token to use with other clients.
 */
export const SESSION_COOKIE = 'task_manager_session';

export const sessionValue = (token: string) => createHmac('sha256', token).update('task-manager dashboard session').digest('base64url');

/** The value of one cookie in a Cookie header, if sent. */
export function cookieOf(header: string | undefined, name: string): string | undefined {
  for (const pair of header?.split(';') ?? []) {
    const at = pair.indexOf('=');
    if (at !== -1 && pair.slice(0, at).trim() === name) return pair.slice(at + 1).trim();
  }
  return undefined;
}
