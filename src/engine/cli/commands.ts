import { compressCommand } from '../jobs/compress';
import { decomposeCommand } from '../jobs/decompose';
import { maskCommand } from '../jobs/mask';
import { CliCommand } from './command';

/** Every `lora-lens` command, in the order `--help` lists them. */
export const COMMANDS: CliCommand[] = [
  maskCommand,
  compressCommand,
  decomposeCommand,
];
