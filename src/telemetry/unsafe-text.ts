/**
 * Characters that a client can put into text we show (a client ID, a username) and that a reader should not meet
 * raw: Unicode's invisible format characters make a terminal or an editor show a line other than it is
 * (bidirectional-text controls reorder the rest of it, "Trojan Source"; zero-width characters, the soft hyphen, the
 * Mongolian vowel separator, interlinear annotation marks and tag characters hide text; U+2028/U+2029 break it for
 * line-oriented readers written in JavaScript; a BOM).
 */
/** The character class's text (regular-expression escapes), shared by both patterns below. */
const INVISIBLE = '\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2069\\ufeff\\ufff9-\\ufffb\\u{e0000}-\\u{e007f}';
export const INVISIBLE_FORMAT_CHARACTERS = new RegExp(`[${INVISIBLE}]`, 'gu');

/**
 * The same plus DEL and the C1 controls (a terminal may act on U+009B as on ESC [), as JSON's `\uXXXX` (a tag
 * character as its two surrogates' escapes). JSON lets all of them through raw (JSON.stringify escapes only
 * U+0000-U+001F, quotes and backslashes), and in a JSON line they can stand only inside a string, where the escape is
 * the same character: a reader that parses the line gets exactly the text, and one that looks at it sees the escape.
 */
const RAW_IN_JSON = new RegExp(`[\\u007f-\\u009f${INVISIBLE}]`, 'gu');

export function escapeUnsafeInJson(line: string): string {
  return line.replace(RAW_IN_JSON, jsonEscape);
}

function jsonEscape(c: string): string {
  let out = '';
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return out;
}
