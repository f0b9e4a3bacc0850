import { Kernels } from '../kernels/kernels';
import { JobContext } from '../util/job';
import { FlagSpec, ParsedArgs } from './args';

export interface CliContext extends JobContext {
  /** The numeric backend chosen by --device, created on first use. */
  kernels(): Promise<Kernels>;
}

export interface CommandResult {
  /** Written to --json FILE. */
  report?: unknown;
  /** The readable report, printed on stdout. */
  text?: string;
}

export interface CliCommand {
  name: string;
  summary: string;
  usage: string;
  flags: Record<string, FlagSpec>;
  maxPositional: number;
  run(args: ParsedArgs, ctx: CliContext): Promise<CommandResult>;
}
