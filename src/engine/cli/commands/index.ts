import { censusCommand } from './census';
import { convertCommand } from './convert';
import { estimateCommand } from './estimate';
import { compressCommand } from './compress';
import { decomposeCommand } from './decompose';
import { maskCommand } from './mask';
import { compareCommand } from './compare';
import { extractCommand } from './extract';
import { mergeCommand } from './merge';
import { precisionCommand } from './precision';
import { validateCommand } from './validate';
import { CliCommand } from '../command';

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
  convertCommand,
];
