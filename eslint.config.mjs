// `npm run lint`: typescript-eslint's recommended rules, and the walls between the rooms of the code,
// checked on resolved import paths (import-x/no-restricted-paths) and for cycles (import-x/no-cycle).
// A room may import rooms below it in its list, never one above, so data and calls flow one way.
import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/** The engine's rooms, highest first. */
const ENGINE_ROOMS = [
  ['src/engine/cli.ts', 'src/engine/host.ts'],
  ['src/engine/cli', 'src/engine/demo.ts'],
  ['src/engine/run'],
  ['src/engine/jobs', 'src/engine/synthetic'],
  ['src/engine/unmerge'],
  ['src/engine/tensors', 'src/engine/lowrank'],
  ['src/engine/census'],
  ['src/engine/kernels'],
  ['src/engine/checkpoint'],
  ['src/engine/util'],
  ['src/engine/safetensors'],
  ['src/engine/linalg'],
  ['src/engine/errors.ts'],
];

/** The shared room's own rooms, highest first: the panels' models over the contracts and the format core. */
const SHARED_ROOMS = [
  ['src/shared/charts'],
  ['src/shared/jobs', 'src/shared/protocol.ts', 'src/shared/webviewProtocol.ts'],
  ['src/shared/weights'],
  ['src/shared/census', 'src/shared/safetensors', 'src/shared/pytorch'],
  ['src/shared/files.ts'],
  ['src/shared/errors.ts', 'src/shared/format.ts'],
];

/** No import from a lower room up into a higher one. */
function layered(rooms) {
  return rooms.slice(1).map((lower, i) => ({
    target: lower.map((p) => `./${p}`),
    from: rooms.slice(0, i + 1).flat().map((p) => `./${p}`),
    message: 'a lower room imports from a higher one: move the shared piece down instead',
  }));
}

const WALLS = [
  { target: './src/engine', from: ['./src/extension', './webview'], message: 'the engine knows nothing of the extension or the webview' },
  { target: './src/extension', from: './src/engine', message: 'the extension talks to the engine through src/shared only' },
  { target: './webview', from: ['./src/engine', './src/extension'], message: 'the webview only draws: it imports src/shared only' },
  { target: './src/shared', from: ['./src/engine', './src/extension', './webview'], message: 'src/shared is below every other room' },
  { target: './src/engine/jobs', from: ['./src/engine/cli', './src/engine/run'], message: 'jobs are called by the CLI and runJob, never the other way' },
  {
    target: ENGINE_ROOMS.flat().filter((r) => r !== 'src/engine/kernels').map((r) => `./${r}`),
    from: ['./src/engine/kernels/poolKernels.ts', './src/engine/kernels/pool.ts', './src/engine/kernels/poolOps.ts', './src/engine/kernels/gpu'],
    message: 'outside kernels/, use the Kernels interface (kernels.ts; select.ts picks the backend)',
  },
  ...layered(ENGINE_ROOMS),
  ...layered(SHARED_ROOMS),
];

const noVscode = { paths: [{ name: 'vscode', message: 'only src/extension imports vscode' }] };

export default tseslint.config(
  { ignores: ['dist/**', 'out/**', 'node_modules/**', 'test/e2e/**', '.demo/**', '.lavapipe/**', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.json'] })],
    },
    rules: {
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: WALLS }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
    },
  },
  { files: ['src/engine/**/*.ts', 'src/shared/**/*.ts', 'webview/**/*.ts'], rules: { 'no-restricted-imports': ['error', noVscode] } },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/engine/kernels/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "BinaryExpression[operator='instanceof'][right.name=/Kernels$/]", message: 'a backend is chosen inside kernels/ only: ask the Kernels interface' },
      ],
    },
  },
);
