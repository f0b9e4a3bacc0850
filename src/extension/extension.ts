/**
 * LoRA Lens in VS Code: the Parameter Census tree, the commands (palette, Explorer, tree), the
 * .safetensors viewer and the report panels. Every numeric job runs in the engine child process.
 */
import * as vscode from 'vscode';
import { CensusView } from './census/censusView';
import { TreeNode } from './census/treeModel';
import { commandHandlers } from './commands';
import { JobRunner } from './engine/jobRunner';
import { PYTORCH_VIEW_TYPE, SAFETENSORS_VIEW_TYPE, SafetensorsEditorProvider } from './editor/safetensorsEditor';
import { onDidRequestTensor, registerPanelSerializers, showReportPanel } from './panels';
import { Pickers } from './pickers';
import { WorkspaceScanner } from './workspace/scanner';

export function activate(context: vscode.ExtensionContext): void {
  const output = vscode.window.createOutputChannel('LoRA Lens');
  const hostScript = vscode.Uri.joinPath(context.extensionUri, 'dist', 'engine-host.js').fsPath;
  const runner = new JobRunner(hostScript, output);
  const census = new CensusView();
  const censusTree = vscode.window.createTreeView<TreeNode>('loraLens.census', { treeDataProvider: census, showCollapseAll: true });
  const scanner = new WorkspaceScanner();
  const pickers = new Pickers(context.workspaceState, scanner);
  context.subscriptions.push(output, runner, census, censusTree, scanner);
  void vscode.commands.executeCommand('setContext', 'loraLens.censusEmpty', true);
  void scanner.scan();

  const handlers = commandHandlers({ context, runner, census, censusTree, scanner, pickers, output });
  for (const [id, handler] of Object.entries(handlers)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, (arg?: unknown) =>
        handler(arg instanceof vscode.Uri || isTreeNode(arg) ? arg : undefined).catch((e: unknown) => {
          output.appendLine(`${id}: ${(e as Error).stack ?? e}`);
          void vscode.window.showErrorMessage(`LoRA Lens: ${(e as Error).message}`);
        }),
      ),
    );
  }
  context.subscriptions.push(
    vscode.commands.registerCommand('loraLens.showCensusPanel', (n?: TreeNode) => {
      const path = n?.checkpoint ?? census.paths[0];
      const report = path === undefined ? undefined : census.reportOf(path);
      if (report !== undefined) showReportPanel(context, 'census', report, `Census: ${n?.label ?? path}`);
    }),
    ...[SAFETENSORS_VIEW_TYPE, PYTORCH_VIEW_TYPE].map((viewType) =>
      vscode.window.registerCustomEditorProvider(viewType, new SafetensorsEditorProvider(), {
        webviewOptions: { retainContextWhenHidden: false },
        supportsMultipleEditorsPerDocument: true,
      }),
    ),
    onDidRequestTensor((name) => {
      const node = census.findTensor(name);
      if (node) void censusTree.reveal(node, { select: true, focus: true, expand: true });
    }),
  );
  registerPanelSerializers(context);
}

function isTreeNode(x: unknown): x is TreeNode {
  return typeof x === 'object' && x !== null && 'kind' in x && 'checkpoint' in x && 'children' in x;
}

export function deactivate(): void {}
