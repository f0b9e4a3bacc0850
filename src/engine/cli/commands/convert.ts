import { convertCheckpoint } from '../../jobs/convert';
import { required } from '../args';
import { CliCommand } from '../command';

export const convertCommand: CliCommand = {
  name: 'convert',
  summary: 'a PyTorch pickle checkpoint (.bin, .pt, .pth; a model or adapter folder) -> safetensors, bit for bit',
  usage: 'convert --in PATH --out PATH',
  flags: { in: { kind: 'string' }, out: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'convert';
    const r = await convertCheckpoint(required(c, args.flags, 'in'), required(c, args.flags, 'out'), ctx);
    return { report: r, text: `converted ${r.tensors} tensors (${r.bytes.toLocaleString('en')} bytes) of ${r.in}\nwrote ${r.out}${r.kind === 'file' ? '' : `/ (${r.files.join(', ')})`}` };
  },
};
