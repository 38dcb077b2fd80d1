/**
 * Splits a command line into words as a POSIX shell would, without
 * expanding anything: blanks separate words, single quotes keep everything,
 * double quotes keep all but `\` before `"`, `\`, `$`, `` ` `` or a newline,
 * and a `\` outside quotes keeps the next character. Throws on an unclosed
 * quote, naming it.
 */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let at = 0; at < line.length; at++) {
    const char = line[at]!;
    if (char === ' ' || char === '\t' || char === '\n') {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (char === "'") {
      const end = line.indexOf("'", at + 1);
      if (end === -1) throw new Error(`the single quote at character ${at + 1} is not closed`);
      word = (word ?? '') + line.slice(at + 1, end);
      at = end;
    } else if (char === '"') {
      const start = at;
      let text = '';
      for (at++; line[at] !== '"'; at++) {
        if (at >= line.length) throw new Error(`the double quote at character ${start + 1} is not closed`);
        const escapes = line[at] === '\\' && at + 1 < line.length && '"\\$`\n'.includes(line[at + 1]!);
        if (escapes) at++;
        if (!(escapes && line[at] === '\n')) text += line[at]; // a quoted line continuation is no character
      }
      word = (word ?? '') + text;
    } else if (char === '\\') {
      const next = line[++at];
      if (next !== undefined && next !== '\n') word = (word ?? '') + next;
      else if (next === undefined) word = `${word ?? ''}\\`;
    } else {
      word = (word ?? '') + char;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}
