/**
 * LoRA Lens in VS Code: the Parameter Census tree, the commands (palette, Explorer, tree), the
 * .safetensors viewer and the report panels. Every numeric job runs in the engine child process.
 */
import * as vscode from 'vscode';
import { CensusView } from './census/censusView';
import { TreeNode } from './census/treeModel';
import { CENSUS_STATE, commandHandlers } from './commands';
import { JobRunner } from './engine/jobRunner';
import { PYTORCH_VIEW_TYPE, SAFETENSORS_VIEW_TYPE, SafetensorsEditorProvider } from './editor/safetensorsEditor';
import { onDidRequestTensor, registerPanelSerializers } from './panels';
import { Pickers } from './pickers';
import { WorkspaceScanner } from './workspace/scanner';
import { RecognisedFolders } from './workspace/folders';

export function activate(context: vscode.ExtensionContext): void {
  // A log channel: every line timestamped, warnings and errors marked.
  const output = vscode.window.createOutputChannel('LoRA Lens', { log: true });
  const hostScript = vscode.Uri.joinPath(context.extensionUri, 'dist', 'engine-host.js').fsPath;
  const runner = new JobRunner(hostScript, output);
  const census = new CensusView();
  const censusTree = vscode.window.createTreeView<TreeNode>('loraLens.census', { treeDataProvider: census, showCollapseAll: true });
  const scanner = new WorkspaceScanner(context.workspaceState);
  const pickers = new Pickers(context.workspaceState, scanner);
  context.subscriptions.push(output, runner, census, censusTree, scanner);

  // While the census is empty, the view's title says what the workspace holds (a message would hide the
  // welcome buttons, and a description is hidden when the view is alone in its container).
  const describeWorkspace = (f: RecognisedFolders): void => {
    const n = (k: number, one: string): string => `${k} ${one}${k === 1 ? '' : 's'}`;
    censusTree.title = census.paths.length > 0 ? 'Parameter Census' : `Parameter Census (${n(f.adapters.length, 'adapter')}, ${n(f.models.length, 'model')} found)`;
  };
  context.subscriptions.push(
    scanner.onDidChange(describeWorkspace),
    census.onDidChangeOpen((open) => {
      void context.workspaceState.update(CENSUS_STATE, open);
      describeWorkspace(scanner.folders);
    }),
    vscode.workspace.onDidChangeConfiguration((e) => e.affectsConfiguration('loraLens.cosineThreshold') && census.refresh()),
  );

  const handlers = commandHandlers({ context, runner, census, censusTree, scanner, pickers, output });
  for (const [id, handler] of Object.entries(handlers)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, (arg?: unknown, selection?: unknown) =>
        pickers.run(() =>
          handler(
            arg instanceof vscode.Uri || isTreeNode(arg) ? arg : undefined,
            Array.isArray(selection) && selection.every((u) => u instanceof vscode.Uri) ? selection : undefined,
          ),
        ).catch((e: unknown) => {
          output.error(`${id}: ${(e as Error).stack ?? e}`);
          void vscode.window.showErrorMessage(`LoRA Lens: ${(e as Error).message}`);
        }),
      ),
    );
  }
  /** A tensor of a file in the census tree, the file opened there first if needed. */
  const tensorNode = async (file: string, name: string): Promise<TreeNode | undefined> => {
    if (census.reportOf(file) === undefined) await vscode.commands.executeCommand('loraLens.openInCensus', vscode.Uri.file(file));
    return census.findTensor(name, file);
  };
  const viewerLinks = {
    openInCensus: async (file: string) => void (await vscode.commands.executeCommand('loraLens.openInCensus', vscode.Uri.file(file))),
    revealTensor: async (file: string, name: string) => {
      const node = await tensorNode(file, name);
      if (node) await censusTree.reveal(node, { select: true, focus: true, expand: true });
    },
    tensorStats: async (file: string, name: string) => {
      const node = await tensorNode(file, name);
      if (node) await vscode.commands.executeCommand('loraLens.tensorStats', node);
    },
  };
  context.subscriptions.push(
    ...[SAFETENSORS_VIEW_TYPE, PYTORCH_VIEW_TYPE].map((viewType) =>
      vscode.window.registerCustomEditorProvider(viewType, new SafetensorsEditorProvider(context.extensionUri, viewerLinks), {
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
  void scanner.scan();
  void vscode.commands.executeCommand('loraLens.restoreCensus');
}

function isTreeNode(x: unknown): x is TreeNode {
  return typeof x === 'object' && x !== null && 'kind' in x && 'checkpoint' in x && 'children' in x;
}

export function deactivate(): void {}
