/** The panel model of each report kind, and of the weights viewer: the one entry point the webview calls. */
import { PanelContent } from '../webviewProtocol';
import { censusPanel } from './census';
import { equivalencePanel } from './equivalence';
import { combinePanel, extractLoraPanel, resizePanel, spectrumPanel } from './lowrank';
import { PanelModel, withoutOneBarCharts } from './model';
import { precisionPanel } from './precision';
import { statsPanel } from './stats';
import { decomposePanel, maskPanel } from './unmerge';
import { validatePanel } from './validate';
import { weightsPanel } from './weights';

export function panelModel(c: PanelContent): PanelModel {
  return withoutOneBarCharts(kindModel(c));
}

function kindModel(c: PanelContent): PanelModel {
  switch (c.kind) {
    case 'compare':
      return equivalencePanel(c.report, c.title);
    case 'validate':
      return validatePanel(c.report, c.title, c.comparisons);
    case 'precision':
      return precisionPanel(c.report, c.title);
    case 'mask':
      return maskPanel(c.report, c.title);
    case 'decompose':
      return decomposePanel(c.report, c.title);
    case 'census':
      return censusPanel(c.report, c.title);
    case 'spectrum':
      return spectrumPanel(c.report, c.title);
    case 'resize':
      return resizePanel(c.report, c.title);
    case 'extract-lora':
      return extractLoraPanel(c.report, c.title);
    case 'combine':
      return combinePanel(c.report, c.title);
    case 'stats':
      return statsPanel(c.report, c.title);
    case 'weights':
      return weightsPanel(c.weights);
  }
}
