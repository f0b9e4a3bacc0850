import { LensError } from '../errors';
import { JobContext } from '../util/job';
import { CpuKernels } from './cpu';
import { adapterName, ALLOW_SOFTWARE_GPU_ENV, openGpu, softwareGpuAllowed } from './gpu/dawn';
import { GpuKernels, GpuSizes } from './gpu/gpuKernels';
import { Kernels } from './kernels';
import { workerScript } from './pool';
import { WorkerKernels } from './poolKernels';
import { DeviceChoice } from '../../shared/jobs/choices';


/**
 * The kernels for `--device`: `auto` takes a working hardware GPU, else the CPU; `gpu` without one is an
 * error. A software adapter (lavapipe, SwiftShader) counts as no GPU unless LORA_LENS_ALLOW_SOFTWARE_GPU=1.
 */
export async function selectKernels(choice: DeviceChoice, ctx: JobContext): Promise<Kernels> {
  if (choice !== 'cpu') {
    const gpu = await gpuKernels(ctx);
    if (gpu instanceof GpuKernels) {
      ctx.log(`numerics on ${gpu.description}`);
      return gpu;
    }
    if (choice === 'gpu') throw new LensError('--device gpu', `${gpu}; use --device cpu or auto`);
    ctx.log(`no usable GPU (${gpu}): numerics on the CPU`);
  }
  const k = cpuKernels(ctx);
  ctx.log(`numerics on ${k.description}`);
  return k;
}

/** The CPU backend on worker threads; on the calling thread where the worker script cannot be found. */
export function cpuKernels(ctx: JobContext): Kernels {
  const script = workerScript();
  if (script !== undefined) return new WorkerKernels(undefined, script);
  ctx.warn('the kernel worker script (kernel-worker.js) is missing: numerics on the main thread only');
  return new CpuKernels();
}

/** GPU kernels, or why there are none. */
export async function gpuKernels(ctx: JobContext, sizes: Partial<GpuSizes> = {}): Promise<GpuKernels | string> {
  const opened = await openGpu();
  if (!opened.ok) return opened.reason;
  const { adapter } = opened.gpu;
  if (adapter.software && !softwareGpuAllowed()) {
    return `the only WebGPU adapter is ${adapterName(adapter)}, a CPU driver (set ${ALLOW_SOFTWARE_GPU_ENV}=1 to use it anyway)`;
  }
  return new GpuKernels(opened.gpu, (m) => ctx.warn(m), sizes);
}
