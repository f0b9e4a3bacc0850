/**
 * The regexes of an adapter config, matched as PEFT matches them and in bounded time: `target_modules`
 * as a string is `re.fullmatch(pattern, module)`, a `rank_pattern` / `alpha_pattern` key is
 * `re.match(rf"(.*\.)?({key})$", module)`.
 *
 * A config is hostile input, and a backtracking engine (JavaScript's, Python's) can take exponential
 * time on a pattern like `(.|.)*Z`, with the main thread (and so Ctrl-C) stuck. Patterns are matched
 * with re2js, a maintained port of RE2 whose matching is linear in the input, whatever the pattern.
 * RE2 has no lookaround or backreferences; a pattern that needs them (`^(?!.*vision).*q_proj` is seen in
 * the wild) runs on JavaScript's engine under a deadline (node:vm's timeout interrupts a regex), and
 * one that does not finish in time is bad input. A pattern Python cannot compile either (`[`) is bad
 * input, as it is for PEFT.
 */
import * as vm from 'node:vm';
import { RE2JS } from 're2js';
import { LensError } from '../errors';

export type PatternUse = 'fullmatch' | 'key';

/** Time one backtracking pattern may spend in all, over every module it is tried on. */
const DEADLINE_MS = 1000;

type Matcher = (module: string) => boolean;
const compiled = new Map<string, Matcher>();

/** Python spellings RE2 writes otherwise: `\Z` (end of text) is RE2's `\z`. */
function re2Source(src: string): string {
  return src.replace(/(?<!\\)((?:\\\\)*)\\Z/g, '$1\\z');
}

/** The pattern in JavaScript's syntax: named groups and anchors as Python writes them, inline flags as flags. */
function jsSource(src: string): { source: string; flags: string } {
  let flags = '';
  const s = src.replace(/^\(\?([aiLmsux]+)\)/, (_, f: string) => {
    for (const c of f) if ('ims'.includes(c)) flags += c;
    return '';
  });
  const source = s
    .replace(/\(\?P<(\w+)>/g, '(?<$1>')
    .replace(/\(\?P=(\w+)\)/g, '\\k<$1>')
    .replace(/(?<!\\)((?:\\\\)*)\\A/g, '$1^')
    .replace(/(?<!\\)((?:\\\\)*)\\Z/g, '$1$');
  return { source, flags };
}

/** `pattern` around `src` for its use: the whole name, or a key matched at the end of the module path. */
function wrap(src: string, use: PatternUse): string {
  return use === 'fullmatch' ? `(?:${src})` : `(.*\\.)?(${src})`;
}

function compile(src: string, use: PatternUse, file: string, field: string): Matcher {
  try {
    const re = RE2JS.compile(`^${wrap(re2Source(src), use)}$`);
    return (m) => re.matcher(m).find();
  } catch (re2Error) {
    let re: RegExp;
    try {
      const js = jsSource(src);
      re = new RegExp(`^${wrap(js.source, use)}$`, js.flags);
    } catch {
      throw new LensError(file, `${field} ${JSON.stringify(src)} is not a valid regular expression (${(re2Error as Error).message})`);
    }
    const context = vm.createContext({ re, m: '' });
    const tooComplex = (): LensError => new LensError(file, `${field} ${JSON.stringify(src)} is too complex: matching it did not finish within ${DEADLINE_MS} ms`);
    let spent = 0;
    return (m) => {
      context.m = m;
      const t0 = performance.now();
      let hit: boolean | undefined;
      try {
        hit = vm.runInContext('re.test(m)', context, { timeout: Math.max(1, Math.ceil(DEADLINE_MS - spent)) }) as boolean;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw e;
      }
      spent += performance.now() - t0;
      if (hit === undefined || spent >= DEADLINE_MS) throw tooComplex();
      return hit;
    };
  }
}

/**
 * The matcher of `src` used as `use`, compiled once; `file` and `field` name it in errors (the first
 * compile's are kept: configs are checked when they are read, so that is where a bad pattern is named).
 */
export function patternMatcher(src: string, use: PatternUse, file = 'adapter_config.json', field = use === 'fullmatch' ? 'target_modules' : 'pattern key'): Matcher {
  const key = `${use}\0${src}`;
  let m = compiled.get(key);
  if (m === undefined) {
    m = compile(src, use, file, field);
    compiled.set(key, m);
  }
  return m;
}
