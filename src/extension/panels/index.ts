/**
 * The report panels, as the rest of the extension sees them: `showReportPanel` opens (or reuses) the
 * panel of a report kind and shows a report in it; `registerPanelSerializers` (call once at activation)
 * brings panels back after a window reload; `onDidRequestTensor` fires when the user clicks a tensor
 * name in a panel's table (the census tree can reveal it).
 *
 * Selectors for the end-to-end tests, inside the webview's iframe (summary values carry the raw number
 * as `data-value`, table cells too, with `data-key` = column):
 * - every panel: `#panel[data-kind=<kind>][data-state=ready]` once drawn (`data-state=error` if the
 *   report cannot be drawn); `h1#panel-title`; `#verdict` (`data-tone` good|bad|neutral); `#status`
 *   ("Saved <path>" after an export); `#export-json`; each chart section `#section-<id>` with
 *   `canvas#chart-<id>` (`data-points` = values drawn), its table `#table-<id>`, its `#export-png-<id>`.
 * - compare: `#summary-equivalent` (data-value true|false), `#summary-tolerance`, `#summary-shared`,
 *   `#summary-perfect-matches`, `#summary-task-vector-only`, `#summary-task-vector-only-norm`,
 *   `#summary-lora-only`, `#mean-cosine`, `#min-cosine`, `#max-abs-diff`; sections `cosine`,
 *   `max-abs-diff`, `norms`, `norm-distribution`, `coverage` (a heat-map table).
 * - validate: `#summary-ok`, `#summary-rule`, `#summary-tolerance`, per dtype D `#status-D`
 *   (PASS|EXPECTED-LOSS|FAIL), section `D-summary` with the compare ids prefixed `D-` (`#fp32-mean-cosine`);
 *   sections `dtypes`, `dtype-max-abs-diff`; with `options.folder`, each dtype's compare sections
 *   prefixed too (`#section-fp16-cosine`).
 * - precision: per dtype D `#nonzero-tensors-D`, `#adapted-tensors-D`, `#cast-artifact-tensors-D`,
 *   `#cast-artifact-norm-D`, `#delta-lost-D`, `#recovered-rel-err-D`; sections `nonzero`,
 *   `cast-artifacts`, `delta-lost`, `rules`.
 * - mask: `#summary-budget`, `#summary-modules`, `#summary-k`, `#summary-selected`, `#summary-elements`;
 *   sections `mask-layers` (heat-map table), `mask-projections`, `norm-preservation`.
 * - decompose: `#summary-decomposable`, `#summary-verdict`, `#summary-method`, `#summary-support`,
 *   `#summary-relative-residual`, `#summary-reconstruction-error`, `#summary-cosine`,
 *   `#summary-explained-energy`, with a truth `#summary-precision`, `#summary-recall`,
 *   `#summary-coefficient-error`; section `coefficients`, one row `tr#coefficient-<adapter>` per adapter
 *   (name with characters other than [A-Za-z0-9_-] as `_`), its value in `[data-key=coefficient]`.
 * - census: `#summary-tensors`, `#summary-params`, `#summary-bytes`, `#summary-layers`,
 *   `#summary-lora-targets`, `#summary-non-targets`, with an adapter `#summary-adapter-r`,
 *   `#summary-adapter-alpha`, `#summary-lora-modules`, `#summary-trainable-params`; sections
 *   `categories`, `layers`, `dtypes`.
 * - spectrum: `#summary-modules`, `#summary-total-rank`, `#summary-energy-rank99`, `#summary-rank-usage`,
 *   `#summary-mean-energy-rank99`, `#summary-max-energy-rank99`; sections `singular-values`, `energy`,
 *   `energy-rank-layers` (a heat-map table, a column per module kind), `modules`.
 * - resize: `#summary-modules`, `#summary-from-params`, `#summary-params`, `#summary-mean-energy-kept`,
 *   `#summary-max-rel-error`; section `resize-error`.
 * - extract-lora: `#summary-modules`, `#summary-params`, `#summary-mean-energy-kept`, `#summary-max-rel-error`,
 *   `#summary-unchanged`, `#summary-not-captured`, `#summary-rounding-noise`; sections `energy-captured`,
 *   `rounding-noise`, `not-captured`.
 * - combine: `#summary-adapters`, `#summary-rank`, `#summary-modules`, `#summary-params`,
 *   `#summary-max-rel-error`; sections `inputs`, `combine-ranks` (`td[data-key=rank]` per module).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { readSpectrumReport } from '../../shared/jobs/reports/lowrank';
import { readValidateReport } from '../../shared/jobs/reports/validate';
import { PanelContent, parsePanelContent, ReportContent, ReportKind } from '../../shared/webviewProtocol';
import { REPORT_VIEW_TYPE, ReportPanel, webviewOptions } from './reportPanel';

export type { ReportKind } from '../../shared/webviewProtocol';

/** One panel per report subject (kind and title): a second Compare of other models opens beside the first. */
const panels = new Map<string, ReportPanel>();
const keyOf = (c: PanelContent): string => `${c.kind}\u0000${c.title}`;
const tensorRequests = new vscode.EventEmitter<string>();

/** Fires with a tensor's name when the user picks it in a panel. */
export const onDidRequestTensor: vscode.Event<string> = tensorRequests.event;

export interface ReportPanelOptions {
  /** validate: its output folder; each dtype's `comparison_results.json` there is drawn too. */
  folder?: string;
}

/** Shows a report in the panel of its subject (the same job on the same inputs), opening one beside the editor when there is none. */
export function showReportPanel(
  context: vscode.ExtensionContext,
  kind: ReportKind,
  report: unknown,
  title: string,
  options: ReportPanelOptions = {},
): void {
  const content: ReportContent = { kind, title, report };
  if (kind === 'validate' && options.folder !== undefined) content.comparisons = readComparisons(report, options.folder);
  const existing = panels.get(keyOf(content));
  if (existing) {
    existing.show(content);
    return;
  }
  const panel = vscode.window.createWebviewPanel(
    REPORT_VIEW_TYPE,
    title,
    { viewColumn: vscode.ViewColumn.Beside, preserveFocus: false },
    webviewOptions(context.extensionUri),
  );
  adopt(context, panel, content);
}

/** Restores panels VS Code kept across a reload, from the state their page saved. */
export function registerPanelSerializers(context: vscode.ExtensionContext): void {
  context.subscriptions.push(
    tensorRequests,
    vscode.window.registerWebviewPanelSerializer(REPORT_VIEW_TYPE, {
      async deserializeWebviewPanel(panel: vscode.WebviewPanel, state: unknown): Promise<void> {
        const content = parsePanelContent(state);
        if (content === null || content.kind === 'weights' || panels.has(keyOf(content))) {
          panel.dispose(); // nothing usable to show, or a newer panel of that report exists (the viewer is a custom editor: VS Code reopens it)
          return;
        }
        adopt(context, panel, content);
      },
    }),
  );
}

function adopt(context: vscode.ExtensionContext, panel: vscode.WebviewPanel, content: PanelContent): void {
  const key = keyOf(content);
  // A spectrum's "Resize…" resizes the adapter its report names.
  const adapter = content.kind === 'spectrum' ? readSpectrumReport(content.report).adapter : null;
  const resize = adapter !== null ? (): void => void vscode.commands.executeCommand('loraLens.resize', vscode.Uri.file(adapter)) : undefined;
  const p = new ReportPanel(
    panel,
    context.extensionUri,
    content,
    (name) => tensorRequests.fire(name),
    () => {
      if (panels.get(key) === p) panels.delete(key);
    },
    undefined,
    undefined,
    resize,
  );
  panels.set(key, p);
}

/** Each dtype's compare report under a validate output folder, by dtype; missing ones are left out. */
function readComparisons(report: unknown, folder: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const d of readValidateReport(report).dtypes) {
    if (d.dtype === null) continue;
    const sub = d.folder !== null ? path.basename(d.folder) : d.dtype;
    try {
      out[d.dtype] = JSON.parse(fs.readFileSync(path.join(folder, sub, 'comparison_results.json'), 'utf8'));
    } catch {
      // A dtype without its comparison file is drawn from the summary alone.
    }
  }
  return out;
}
