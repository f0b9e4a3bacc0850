/**
 * What a report panel does with messages, apart from VS Code: hold the content, post it only once the
 * page says `ready`, drop anything malformed, and export from the content the host holds (never from
 * data the page sends, except a chart's PNG). No vscode import, so the unit tests drive it.
 */
import { HostMessage, PanelContent, parseWebviewMessage, WebviewMessage } from '../../shared/webviewProtocol';

export interface PanelIo {
  post(m: HostMessage): void;
  /** Asks the user where to save `fileName`, writes `bytes` there, returns the path (null: cancelled). */
  saveAs(fileName: string, kind: 'json' | 'png', bytes: Uint8Array): Promise<string | null>;
  openTensor(name: string): void;
}

export class PanelController {
  private ready = false;

  constructor(private content: PanelContent, private readonly io: PanelIo) {}

  get current(): PanelContent {
    return this.content;
  }

  /** New content: posted now if the page listens, else when it says ready. */
  show(content: PanelContent): void {
    this.content = content;
    if (this.ready) this.io.post({ type: 'show', ...content });
  }

  /** A message from the page, validated first; returns once any export it asked for is written. */
  async receive(raw: unknown): Promise<void> {
    const m = parseWebviewMessage(raw);
    if (m !== null) await this.handle(m);
  }

  private async handle(m: WebviewMessage): Promise<void> {
    switch (m.type) {
      case 'ready':
        // Also after the page was reloaded (a hidden panel is torn down): it gets the latest content.
        this.ready = true;
        this.io.post({ type: 'show', ...this.content });
        return;
      case 'exportJson': {
        const bytes = new TextEncoder().encode(JSON.stringify(this.content.report, null, 2) + '\n');
        this.io.post({ type: 'exported', what: 'json', file: await this.io.saveAs(`${this.content.kind}-report.json`, 'json', bytes) });
        return;
      }
      case 'exportPng': {
        const bytes = Uint8Array.from(Buffer.from(m.dataUrl.slice(m.dataUrl.indexOf(',') + 1), 'base64'));
        this.io.post({ type: 'exported', what: 'png', file: await this.io.saveAs(`${this.content.kind}-${m.name}.png`, 'png', bytes) });
        return;
      }
      case 'openTensor':
        this.io.openTensor(m.name);
        return;
    }
  }
}
