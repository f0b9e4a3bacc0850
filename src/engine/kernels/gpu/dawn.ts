/// <reference types="@webgpu/types" />
/**
 * Opening a WebGPU device through Dawn (the optional `webgpu` package, loaded lazily so that a machine
 * without it still runs on the CPU).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

interface DawnModule {
  create(options: string[]): GPU;
  globals: { GPUBufferUsage: Record<string, number>; GPUMapMode: Record<string, number> };
}

/** The adapter a device runs on, as reports and logs show it. */
export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU driver (lavapipe/llvmpipe, SwiftShader, a fallback adapter): correct, but no GPU speed. */
  software: boolean;
}

export interface OpenGpu {
  device: GPUDevice;
  adapter: AdapterDescription;
  bufferUsage: Record<string, number>;
  mapRead: number;
}

export type OpenResult = { ok: true; gpu: OpenGpu } | { ok: false; reason: string };

/** Where the dawn.node instance lives: dawn.node crashed in InstanceBase::ProcessEvents when V8 collected it. */
const KEEP = Symbol.for('lora-lens.dawn-instance');

/** The folder of this platform's Dawn binary, as the `webgpu` package names it. */
export const DAWN_PLATFORM = `${process.platform}-${process.platform === 'darwin' ? 'universal' : process.arch}`;

/**
 * Dawn's native addon: the copy a platform-specific .vsix carries beside the bundles
 * (dist/dawn/<platform>/dawn.node, see scripts/package-platform.mjs), else the `webgpu` package's.
 */
export function dawnAddonPath(bundleDir = __dirname): string {
  const packaged = path.join(bundleDir, 'dawn', DAWN_PLATFORM, 'dawn.node');
  if (fs.existsSync(packaged)) return packaged;
  // The package's entry is an ES module; its native addon is plain CommonJS, so load that directly.
  return path.join(path.dirname(require.resolve('webgpu/package.json')), 'dist', DAWN_PLATFORM, 'dawn.node');
}

function loadDawn(): DawnModule | string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon, loaded by path
    return require(dawnAddonPath()) as DawnModule;
  } catch (e) {
    return `the optional package "webgpu" (Dawn) cannot be loaded: ${(e as Error).message.split('\n')[0]}`;
  }
}

const SOFTWARE = /llvmpipe|lavapipe|swiftshader|software|basic render/i;

export function describeAdapter(info: GPUAdapterInfo): AdapterDescription {
  const vendor = info.vendor ?? '';
  const architecture = info.architecture ?? '';
  const device = info.device ?? '';
  const description = info.description ?? '';
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const software = fallback || architecture === 'software' || SOFTWARE.test(`${vendor} ${device} ${description}`);
  return { vendor, architecture, device, description, software };
}

/** Human name of an adapter: "NVIDIA H100 (nvidia)", "llvmpipe ... (software: a CPU driver)". */
export function adapterName(a: AdapterDescription): string {
  const name = a.description || a.device || a.vendor || 'unknown adapter';
  return a.software ? `${name} (software Vulkan on the CPU)` : `${name}${a.vendor ? ` (${a.vendor})` : ''}`;
}

let opening: Promise<OpenResult> | undefined;

/** The process's one GPU device (opened once; the instance stays referenced for the process's life). */
export function openGpu(): Promise<OpenResult> {
  opening ??= openOnce();
  return opening;
}

const VULKAN_LOADER = 'libvulkan.so.1';
const LIBRARY_DIRS = ['/lib', '/usr/lib', '/lib64', '/usr/lib64', '/usr/local/lib', `/lib/${process.arch === 'x64' ? 'x86_64' : 'aarch64'}-linux-gnu`, `/usr/lib/${process.arch === 'x64' ? 'x86_64' : 'aarch64'}-linux-gnu`];

/**
 * Whether the dynamic linker can find the Vulkan loader. Dawn writes a two-line warning straight to the
 * process's stderr when it cannot, which would break the CLI's one-line error contract on every machine
 * without Vulkan, so a missing loader is detected here and Dawn is not started at all.
 */
function vulkanLoaderPresent(): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...LIBRARY_DIRS];
  if (dirs.some((d) => fs.existsSync(path.join(d, VULKAN_LOADER)))) return true;
  try {
    return fs.readFileSync('/etc/ld.so.cache').includes(VULKAN_LOADER);
  } catch {
    return false;
  }
}

/** Lets tests (and CI, which has no GPU) use a software Vulkan driver such as lavapipe. */
export const ALLOW_SOFTWARE_GPU_ENV = 'LORA_LENS_ALLOW_SOFTWARE_GPU';

/** Whether a software driver counts as a GPU: checked before Dawn starts (by driver file) and on the adapter it gives. */
export function softwareGpuAllowed(): boolean {
  return process.env[ALLOW_SOFTWARE_GPU_ENV] === '1';
}

/** Mesa's lavapipe and Google's SwiftShader: Vulkan drivers that run on the CPU. */
const SOFTWARE_ICD = /lvp|lavapipe|llvmpipe|swiftshader/i;

/**
 * The Vulkan drivers (ICD manifests) the loader would find, where the loader looks on Linux:
 * VK_DRIVER_FILES / VK_ICD_FILENAMES (which replace the search), VK_ADD_DRIVER_FILES, then icd.d under
 * the XDG config and data folders and /etc. Each is the manifest's library_path, or null when the
 * manifest cannot be read (counted as a possible GPU driver).
 */
export function vulkanDrivers(env: NodeJS.ProcessEnv = process.env): (string | null)[] {
  const list = (v: string | undefined): string[] => (v ?? '').split(':').filter(Boolean);
  const home = env.HOME ? [path.join(env.XDG_CONFIG_HOME ?? path.join(env.HOME, '.config'), 'vulkan/icd.d'), path.join(env.XDG_DATA_HOME ?? path.join(env.HOME, '.local/share'), 'vulkan/icd.d')] : [];
  const replace = list(env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES);
  const places = replace.length > 0 ? replace : [
    ...home,
    ...list(env.XDG_CONFIG_DIRS ?? '/etc/xdg').map((d) => path.join(d, 'vulkan/icd.d')),
    '/usr/local/etc/vulkan/icd.d', '/etc/vulkan/icd.d',
    ...list(env.XDG_DATA_DIRS ?? '/usr/local/share:/usr/share').map((d) => path.join(d, 'vulkan/icd.d')),
  ];
  const files: string[] = [];
  for (const p of [...places, ...list(env.VK_ADD_DRIVER_FILES)]) {
    try {
      if (fs.statSync(p).isDirectory()) files.push(...fs.readdirSync(p).filter((f) => f.endsWith('.json')).map((f) => path.join(p, f)));
      else files.push(p);
    } catch {
      // not there
    }
  }
  return [...new Set(files)].map((f) => {
    try {
      const lib = (JSON.parse(fs.readFileSync(f, 'utf8')) as { ICD?: { library_path?: unknown } }).ICD?.library_path;
      return typeof lib === 'string' ? lib : null;
    } catch {
      return null;
    }
  });
}

/**
 * Why Dawn should not be started at all, or null. Dawn (and the Vulkan loader through it) prints
 * several "Warning:" lines on stderr when it finds no driver, and lavapipe makes it print two more,
 * so a machine without a GPU driver is recognised here: `--device auto` then stays quiet and
 * `--device gpu` fails with one line. Software drivers count only when softwareGpuAllowed().
 */
function noGpuDriver(): string | null {
  if (process.platform !== 'linux') return null;
  if (!vulkanLoaderPresent()) return `no Vulkan loader (${VULKAN_LOADER}) is installed, so there is no GPU driver to use`;
  const drivers = vulkanDrivers();
  if (drivers.length === 0) return 'no Vulkan driver is installed (no ICD manifest in VK_DRIVER_FILES, VK_ICD_FILENAMES or the vulkan/icd.d folders)';
  if (!softwareGpuAllowed() && drivers.every((d) => d !== null && SOFTWARE_ICD.test(d))) {
    return `the only Vulkan drivers run on the CPU (${drivers.map((d) => path.basename(d!)).join(', ')}; set ${ALLOW_SOFTWARE_GPU_ENV}=1 to use them anyway)`;
  }
  return null;
}

async function openOnce(): Promise<OpenResult> {
  const none = noGpuDriver();
  if (none) return { ok: false, reason: none };
  const dawn = loadDawn();
  if (typeof dawn === 'string') return { ok: false, reason: dawn };
  let gpu: GPU;
  try {
    gpu = dawn.create([]);
  } catch (e) {
    return { ok: false, reason: `Dawn could not start: ${(e as Error).message}` };
  }
  (globalThis as Record<symbol, unknown>)[KEEP] = gpu;
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
  if (!adapter) return { ok: false, reason: 'no WebGPU adapter (no Vulkan GPU driver found)' };
  const L = adapter.limits;
  const wanted = ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension'] as const;
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits: Object.fromEntries(wanted.map((k) => [k, L[k]])) });
  } catch (e) {
    return { ok: false, reason: `the adapter refused a device: ${(e as Error).message}` };
  }
  (globalThis as Record<symbol, unknown>)[Symbol.for('lora-lens.dawn-device')] = device;
  return {
    ok: true,
    gpu: { device, adapter: describeAdapter(adapter.info), bufferUsage: dawn.globals.GPUBufferUsage, mapRead: dawn.globals.GPUMapMode.READ },
  };
}
