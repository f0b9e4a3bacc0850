import * as vscode from 'vscode';
import { CheckpointEntry, checkpointNode, comparisonByName, DEFAULT_COSINE_THRESHOLD, TreeNode } from './treeModel';

/** What is kept per workspace to reopen the census after a reload: the checkpoints, not their reports. */
export interface OpenCheckpoint {
  path: string;
  adapter?: string;
}

/** The "Parameter Census" view: the checkpoints opened so far, each built by treeModel from its census report. */
export class CensusView implements vscode.TreeDataProvider<TreeNode> {
  private readonly entries = new Map<string, CheckpointEntry>();
  private roots: TreeNode[] = [];
  private readonly changed = new vscode.EventEmitter<TreeNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly opened = new vscode.EventEmitter<OpenCheckpoint[]>();
  /** Fires with the open checkpoints whenever one is added or removed. */
  readonly onDidChangeOpen = this.opened.event;

  get open(): OpenCheckpoint[] {
    return [...this.entries.values()].map((e) => (e.adapter ? { path: e.path, adapter: e.adapter } : { path: e.path }));
  }

  /** Redraws with the loraLens.cosineThreshold setting (after it changed). */
  refresh(): void {
    this.rebuild();
  }

  add(path: string, report: unknown, adapter?: string): TreeNode {
    const previous = this.entries.get(path);
    // A new census of the same checkpoint keeps the comparison numbers it already shows.
    this.entries.set(path, { path, adapter, report, comparison: previous?.comparison });
    return this.rebuild(path);
  }

  /** Shows a compare report's per-tensor numbers on the checkpoint `path` (the base model). */
  attachComparison(path: string, report: unknown): void {
    const e = this.entries.get(path);
    if (!e) return;
    e.comparison = comparisonByName(report);
    this.rebuild(path);
  }

  remove(path: string): void {
    this.entries.delete(path);
    this.rebuild();
  }

  clear(): void {
    this.entries.clear();
    this.rebuild();
  }

  get paths(): string[] {
    return [...this.entries.keys()];
  }

  /** The adapter whose targets the census of `path` marks, if any. */
  adapterOf(path: string): string | undefined {
    return this.entries.get(path)?.adapter;
  }

  /** The census report of `path` as the engine wrote it (read it with readCensusReport); undefined if it is not open. */
  reportOf(path: string): unknown {
    return this.entries.get(path)?.report;
  }

  /** The first tensor node of that name (in the checkpoint at `checkpoint`, if given), for revealing a tensor picked in a panel. */
  findTensor(name: string, checkpoint?: string): TreeNode | undefined {
    const walk = (nodes: TreeNode[]): TreeNode | undefined => {
      for (const n of nodes) {
        if (n.tensor === name) return n;
        const hit = walk(n.children);
        if (hit) return hit;
      }
      return undefined;
    };
    return walk(checkpoint === undefined ? this.roots : this.roots.filter((r) => r.checkpoint === checkpoint));
  }

  private rebuild(focus?: string): TreeNode {
    const cosineThreshold = vscode.workspace.getConfiguration('loraLens').get<number>('cosineThreshold', DEFAULT_COSINE_THRESHOLD);
    const before = this.roots.map((r) => r.id).join('\n');
    this.roots = [...this.entries.values()].map((e) => checkpointNode({ ...e, cosineThreshold }));
    void vscode.commands.executeCommand('setContext', 'loraLens.censusHasItems', this.roots.length > 0);
    this.changed.fire(undefined);
    if (this.roots.map((r) => r.id).join('\n') !== before || focus !== undefined) this.opened.fire(this.open);
    return this.roots.find((r) => r.id === focus) ?? this.roots[0];
  }

  getTreeItem(n: TreeNode): vscode.TreeItem {
    const state =
      n.children.length === 0
        ? vscode.TreeItemCollapsibleState.None
        : n.kind === 'checkpoint'
          ? vscode.TreeItemCollapsibleState.Expanded
          : vscode.TreeItemCollapsibleState.Collapsed;
    const item = new vscode.TreeItem(n.label, state);
    item.id = n.id;
    item.description = n.description;
    item.tooltip = new vscode.MarkdownString(n.tooltip, true);
    item.contextValue = n.contextValue;
    item.iconPath = new vscode.ThemeIcon(n.icon, n.iconColor ? new vscode.ThemeColor(n.iconColor) : undefined);
    // Screen readers get the full tensor name, which the label shortens.
    item.accessibilityInformation = { label: `${n.tensor ?? n.label}, ${n.description}` };
    return item;
  }

  getChildren(n?: TreeNode): TreeNode[] {
    return n ? n.children : this.roots;
  }

  getParent(n: TreeNode): TreeNode | undefined {
    const find = (nodes: TreeNode[], parent: TreeNode | undefined): TreeNode | undefined | null => {
      for (const c of nodes) {
        if (c === n) return parent;
        const r = find(c.children, c);
        if (r !== null) return r;
      }
      return null;
    };
    return find(this.roots, undefined) ?? undefined;
  }

  dispose(): void {
    this.changed.dispose();
    this.opened.dispose();
  }
}
