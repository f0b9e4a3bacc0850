import { LensError } from '../errors';
import { JobContext } from '../util/job';
import { CpuKernels } from './cpu';
import { Kernels } from './kernels';

export type DeviceChoice = 'auto' | 'cpu' | 'gpu';
export const DEVICE_CHOICES: readonly DeviceChoice[] = ['auto', 'cpu', 'gpu'];

/** The kernels for `--device`: `auto` takes a working hardware GPU, else the CPU; `gpu` without one is an error. */
export async function selectKernels(choice: DeviceChoice, ctx: JobContext): Promise<Kernels> {
  if (choice === 'gpu') throw new LensError('--device gpu', 'no GPU backend is available in this build; use --device cpu or auto');
  const k = new CpuKernels();
  ctx.log(`numerics on ${k.description}`);
  return k;
}
