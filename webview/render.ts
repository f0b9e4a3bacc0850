/**
 * PanelModel -> DOM. Text goes in through textContent only (tensor names come from files), and styles
 * through classes and CSS custom properties, which the strict CSP allows.
 */
import { Chart } from 'chart.js';
import { formatCell } from '../src/shared/charts/format';
import { PanelModel, Section, SummaryItem, TableSpec, valueCount } from '../src/shared/charts/model';
import { sortedRowOrder } from '../src/shared/charts/sort';
import { drawChart } from './charts';
import { heatmapFigure } from './heatmap';

export interface Actions {
  exportJson(): void;
  /** Saves a drawn canvas (a chart, a heat map) as PNG. */
  exportPng(sectionId: string, canvas: HTMLCanvasElement): void;
  exportCsv(sectionId: string): void;
  exportHtml(): void;
  openTensor(name: string): void;
  openInCensus(): void;
  /** The spectrum panel's "Resize…": resize its adapter. */
  resize(): void;
  tensorStats(name: string): void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { id?: string; className?: string; text?: string } = {},
  ...children: Node[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (props.id) e.id = props.id;
  if (props.className) e.className = props.className;
  if (props.text !== undefined) e.textContent = props.text;
  e.append(...children);
  return e;
}

function button(id: string, text: string, title: string, onClick: () => void, secondary = false): HTMLElement {
  const b = document.createElement('vscode-button');
  b.id = id;
  b.textContent = text;
  b.title = title;
  if (secondary) b.setAttribute('secondary', '');
  b.addEventListener('click', onClick);
  return b;
}

function summaryItem(s: SummaryItem): HTMLElement {
  const value = el('dd', { id: s.id, text: s.text });
  value.dataset.value = String(s.value);
  if (s.tone) value.dataset.tone = s.tone;
  return el('div', { className: 'summary-item' }, el('dt', { text: s.label }), value);
}

/** One list per run of items sharing a group (a dtype), headed by its name; ungrouped items in one list. */
function summaryLists(items: SummaryItem[]): HTMLElement[] {
  const runs: SummaryItem[][] = [];
  for (const s of items) {
    const last = runs[runs.length - 1];
    if (last && last[0].group === s.group) last.push(s);
    else runs.push([s]);
  }
  return runs.map((run) => {
    const list = el('dl', { className: 'summary' }, ...run.map(summaryItem));
    const group = run[0].group;
    if (group === undefined) return list;
    list.setAttribute('aria-label', group);
    return el('div', { className: 'summary-group' }, el('h3', { text: group }), list);
  });
}

/**
 * A tensor name as text with line-break opportunities after its dots (`<wbr>`), so a long name wraps
 * at `model.layers.0.` rather than pushing the table wider than its box; its text stays the name.
 */
function breakable(name: string): Node[] {
  const nodes: Node[] = [];
  for (const part of name.split(/(?<=\.)/)) {
    if (nodes.length > 0) nodes.push(document.createElement('wbr'));
    nodes.push(document.createTextNode(part));
  }
  return nodes;
}

/** Column headers are buttons that sort the rows (toggling direction), announced through aria-sort. */
function sortableHead(spec: TableSpec, body: HTMLElement, rows: HTMLElement[]): HTMLElement {
  const ths = spec.columns.map((c, i) => {
    const sort = el('button', { className: 'sort', text: c.label });
    sort.type = 'button';
    sort.title = `Sort by ${c.label}`;
    const th = el('th', {}, sort);
    th.scope = 'col';
    th.dataset.key = c.key;
    if (c.format) th.classList.add('num');
    sort.addEventListener('click', () => {
      const descending = th.getAttribute('aria-sort') === 'ascending';
      for (const other of ths) other.removeAttribute('aria-sort');
      th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
      body.append(...sortedRowOrder(spec.rows, i, descending).map((r) => rows[r]));
    });
    return th;
  });
  const tr = el('tr', {}, ...ths);
  if (spec.tensorAction) tr.append(el('th', {}, el('span', { className: 'visually-hidden', text: 'Actions' })));
  return tr;
}

function table(sectionId: string, caption: string, spec: TableSpec, actions: Actions): HTMLElement {
  const id = `table-${sectionId}`;
  const body = el('tbody');
  const rows: HTMLElement[] = [];
  spec.rows.forEach((row, r) => {
    const tr = el('tr', { id: spec.rowIds?.[r] });
    row.forEach((cell, c) => {
      const column = spec.columns[c];
      const td = el(c === 0 ? 'th' : 'td');
      if (c === 0) (td as HTMLTableCellElement).scope = 'row';
      const text = formatCell(cell, column?.format);
      if (c === spec.tensorColumn && typeof cell === 'string') {
        const a = el('a', {}, ...breakable(text));
        td.classList.add('tensor');
        a.href = '#';
        a.title = 'Reveal in the census tree';
        a.addEventListener('click', (e) => {
          e.preventDefault();
          actions.openTensor(cell);
        });
        td.append(a);
      } else {
        td.textContent = text;
      }
      if (column?.format) td.classList.add('num');
      if (column?.wrap) td.classList.add('wrap');
      if (typeof cell === 'number' || typeof cell === 'boolean') td.dataset.value = String(cell);
      const heat = spec.heat?.[r]?.[c];
      if (heat !== undefined && heat !== null) {
        td.classList.add('heat');
        td.style.setProperty('--heat', String(Math.max(0, Math.min(1, heat))));
      }
      if (column) td.dataset.key = column.key;
      tr.append(td);
    });
    const tensor = spec.tensorColumn !== undefined ? row[spec.tensorColumn] : undefined;
    if (spec.tensorAction && typeof tensor === 'string') {
      const b = el('button', { className: 'row-action', text: spec.tensorAction.label });
      b.type = 'button';
      b.title = spec.tensorAction.title;
      b.addEventListener('click', () => actions.tensorStats(tensor));
      tr.append(el('td', {}, b));
    }
    rows.push(tr);
  });
  body.append(...rows);
  const t = el('table', { id }, el('caption', { text: caption }), el('thead', {}, sortableHead(spec, body, rows)), body);
  rovingFocus(t);
  const box = el('div', { className: 'table-box' }, t);
  return spec.filter ? el('div', {}, filterBar(sectionId, spec, rows, spec.filter), box) : box;
}

/** A search box that hides the rows whose text does not hold what is typed (any cell, case-insensitive). */
function filterBar(sectionId: string, spec: TableSpec, rows: HTMLElement[], f: { label: string; noun: string }): HTMLElement {
  const input = el('input', { id: `filter-${sectionId}`, className: 'filter' });
  input.type = 'search';
  input.placeholder = f.label;
  input.setAttribute('aria-label', f.label);
  const count = el('span', { id: `count-${sectionId}`, className: 'count' });
  count.setAttribute('aria-live', 'polite');
  const texts = spec.rows.map((row) => row.map((cell, c) => formatCell(cell, spec.columns[c]?.format)).join(' ').toLowerCase());
  const apply = (): void => {
    const q = input.value.trim().toLowerCase();
    let shown = 0;
    rows.forEach((tr, r) => {
      tr.hidden = q !== '' && !texts[r].includes(q);
      if (!tr.hidden) shown++;
    });
    count.textContent = `${shown} of ${rows.length} ${f.noun}`;
  };
  input.addEventListener('input', apply);
  apply();
  return el('div', { className: 'filter-bar' }, input, count);
}

/**
 * One tab stop per table: its sort buttons and tensor links take focus with the arrow keys (Home/End
 * too), so Tab moves from table to table instead of through hundreds of rows.
 */
function rovingFocus(t: HTMLTableElement): void {
  // Rows a filter hides are skipped.
  const items = (): HTMLElement[] => Array.from(t.querySelectorAll<HTMLElement>('button.sort, tr:not([hidden]) > .tensor a, tr:not([hidden]) > td > button.row-action'));
  const all = items();
  all.forEach((e, i) => (e.tabIndex = i === 0 ? 0 : -1));
  t.addEventListener('keydown', (e) => {
    const list = items(); // sorting reorders the rows
    const i = list.indexOf(document.activeElement as HTMLElement);
    if (i < 0) return;
    const next = e.key === 'ArrowDown' || e.key === 'ArrowRight' ? i + 1 : e.key === 'ArrowUp' || e.key === 'ArrowLeft' ? i - 1 : e.key === 'Home' ? 0 : e.key === 'End' ? list.length - 1 : null;
    if (next === null || next < 0 || next >= list.length) return;
    e.preventDefault();
    list[i].tabIndex = -1;
    list[next].tabIndex = 0;
    list[next].focus();
  });
}

/**
 * The section's DOM, and a function drawing its chart once the section is in the page (chart.js
 * measures its box). A section collapses by its heading (a <details> open by default).
 */
function section(s: Section, actions: Actions, charts: Chart[]): { root: HTMLElement; draw(): void } {
  const heading = el('h2', { id: `heading-${s.id}`, text: s.title });
  const details = el('details', { className: 'section-body' }, el('summary', {}, heading));
  details.open = true;
  const root = el('section', { id: `section-${s.id}` }, details);
  root.setAttribute('aria-labelledby', heading.id);
  const body = details;
  if (s.note) body.append(el('p', { className: 'note', text: s.note }));
  if (s.summary?.length) body.append(...summaryLists(s.summary));
  const figure = el('div', { className: s.chart ? 'figure' : s.heatmap && !s.table ? 'figure heatmap-only' : 'figure table-only' });
  let draw = (): void => undefined;
  let chart: Chart | undefined;
  if (s.chart) {
    const canvas = el('canvas', { id: `chart-${s.id}` });
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `${s.title}; the same numbers are in the table beside it.`);
    canvas.dataset.points = String(valueCount(s.chart));
    figure.append(el('div', { className: 'chart-box' }, canvas));
    const spec = s.chart;
    draw = () => {
      chart = drawChart(canvas, spec, actions.openTensor);
      charts.push(chart);
    };
  }
  let heatmap: HTMLCanvasElement | undefined;
  if (s.heatmap) {
    const f = heatmapFigure(s.id, s.title, s.heatmap);
    heatmap = f.canvas;
    figure.append(f.root);
  }
  const tools: HTMLElement[] = [];
  const png = (): HTMLCanvasElement | undefined => chart?.canvas ?? heatmap;
  if (s.chart || s.heatmap) tools.push(button(`export-png-${s.id}`, 'Export PNG', `Save "${s.title}" as a PNG image`, () => { const c = png(); if (c) actions.exportPng(s.id, c); }, true));
  if (s.table || s.heatmap) tools.push(button(`export-csv-${s.id}`, 'Export CSV', `Save the table of "${s.title}" as CSV`, () => actions.exportCsv(s.id), true));
  if (tools.length) body.append(el('div', { className: 'section-tools' }, ...tools));
  if (s.table) figure.append(table(s.id, `${s.title} (data)`, s.table, actions));
  if (s.chart || s.table || s.heatmap) body.append(figure);
  return { root, draw };
}

/** Links to every section, for panels of many (validate draws twenty). */
function contents(sections: Section[]): HTMLElement {
  const list = el('ol', {}, ...sections.map((s) => {
    const a = el('a', { text: s.title });
    a.href = `#section-${s.id}`;
    a.addEventListener('click', (e) => {
      e.preventDefault();
      const target = document.getElementById(`section-${s.id}`);
      const details = target?.querySelector('details');
      if (details) details.open = true;
      target?.scrollIntoView();
      target?.querySelector<HTMLElement>('summary')?.focus();
    });
    return el('li', {}, a);
  }));
  const nav = el('nav', { id: 'contents', className: 'contents' }, el('h2', { text: 'Contents' }), list);
  nav.setAttribute('aria-label', 'Sections of this report');
  return nav;
}

/** Replaces the page's content with the panel; returns the charts drawn, to destroy on the next render. */
export function renderPanel(app: HTMLElement, m: PanelModel, actions: Actions): Chart[] {
  const charts: Chart[] = [];
  const panel = el('div', { id: 'panel' });
  panel.dataset.kind = m.kind;
  const header = el(
    'header',
    {},
    el('h1', { id: 'panel-title', text: m.heading }),
    el('div', { className: 'header-tools' },
      ...(m.openInCensus ? [button('open-in-census', 'Open in Census', 'Open this file in the Parameter Census tree', () => actions.openInCensus())] : []),
      ...(m.resize ? [button('resize', 'Resize…', 'Write this adapter at a lower rank: pick a rank or an energy, with the error and size of each shown first', () => actions.resize())] : []),
      button('export-html', 'Export HTML Report', 'Save the whole panel as one HTML file (charts as images), to attach to an issue or a model card', () => actions.exportHtml()),
      button('export-json', 'Export JSON', 'Save the report as JSON', () => actions.exportJson(), true),
    ),
  );
  panel.append(header);
  if (m.verdict) {
    const v = el('p', { id: 'verdict', className: 'verdict', text: m.verdict.text });
    v.dataset.tone = m.verdict.tone;
    v.setAttribute('role', 'status');
    panel.append(v);
  }
  panel.append(el('p', { id: 'status', className: 'status' }));
  if (m.summary.length) panel.append(...summaryLists(m.summary));
  if (m.warnings.length) panel.append(el('ul', { className: 'warnings', id: 'warnings' }, ...m.warnings.map((w) => el('li', { text: w }))));
  if (m.sections.length >= 4) panel.append(contents(m.sections));
  const sections = m.sections.map((s) => section(s, actions, charts));
  panel.append(...sections.map((s) => s.root));
  app.replaceChildren(panel);
  for (const s of sections) s.draw();
  panel.dataset.state = 'ready';
  return charts;
}

export function renderError(app: HTMLElement, message: string): void {
  const panel = el('div', { id: 'panel' }, el('p', { id: 'verdict', className: 'verdict', text: message }));
  panel.dataset.state = 'error';
  app.replaceChildren(panel);
}

export function showStatus(text: string): void {
  const s = document.getElementById('status');
  if (s) s.textContent = text;
}
