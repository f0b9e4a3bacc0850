import { convertCheckpoint } from '../../jobs/convert';
import { convertDiffusionAdapter, isDiffusionAdapter } from '../../jobs/convertAdapter';
import { required } from '../args';
import { CliCommand } from '../command';

export const convertCommand: CliCommand = {
  name: 'convert',
  summary: 'a PyTorch pickle checkpoint (.bin, .pt, .pth; a model or adapter folder) -> safetensors, bit for bit; a kohya / LyCORIS / diffusers LoRA file -> a PEFT adapter folder with the same fp32 merge',
  usage: 'convert --in PATH --out PATH [--base DIR]',
  flags: { in: { kind: 'string' }, out: { kind: 'string' }, base: { kind: 'string' } },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'convert';
    const input = required<string>(c, args.flags, 'in');
    const out = required<string>(c, args.flags, 'out');
    if (isDiffusionAdapter(input)) {
      const r = await convertDiffusionAdapter(input, out, args.flags.base as string | undefined, ctx);
      return { report: r, text: `converted ${r.modules} ${r.from} modules (${r.tensors} tensors) of ${r.in} to a PEFT ${r.peftType} adapter\nwrote ${r.out}/ (${r.files.join(', ')})` };
    }
    const r = await convertCheckpoint(input, out, ctx);
    return { report: r, text: `converted ${r.tensors} tensors (${r.bytes.toLocaleString('en')} bytes) of ${r.in}\nwrote ${r.out}${r.kind === 'file' ? '' : `/ (${r.files.join(', ')})`}` };
  },
};
