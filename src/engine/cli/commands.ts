import { censusCommand } from '../jobs/census';
import { estimateCommand } from '../jobs/estimate';
import { compressCommand } from '../jobs/compress';
import { decomposeCommand } from '../jobs/decompose';
import { maskCommand } from '../jobs/mask';
import { compareCommand } from '../jobs/compare';
import { extractCommand } from '../jobs/extract';
import { mergeCommand } from '../jobs/merge';
import { precisionCommand } from '../jobs/precision';
import { validateCommand } from '../jobs/validate';
import { CliCommand } from './command';
import { spectrumCommand } from './lowrank';

/** Every `lora-lens` command, in the order `--help` lists them. */
export const COMMANDS: CliCommand[] = [
  censusCommand,
  estimateCommand,
  mergeCommand,
  extractCommand,
  compareCommand,
  precisionCommand,
  validateCommand,
  maskCommand,
  compressCommand,
  decomposeCommand,
  spectrumCommand,
];
