import { CliCommand } from './command';

/** Every `lora-lens` command, in the order `--help` lists them. */
export const COMMANDS: CliCommand[] = [];
