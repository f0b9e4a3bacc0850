/** The report of `extract` (its --json), as the engine writes it and the extension's panels read it. */
import { fields, number, Present, readReport } from './read';

export interface ExtractTensor {
  name: string;
  shape: number[];
  nonzeroElements: number;
  l2Norm: number;
  maxAbs: number;
  /** NaN or infinite elements of the task vector (from either input, or an overflow). */
  nonFinite: number;
}

export interface ExtractReport {
  base: string;
  finetuned: string;
  out: string;
  device: string;
  summary: {
    tensors: number;
    nonzeroTensors: number;
    zeroTensors: number;
    elements: number;
    nonzeroElements: number;
    l2Norm: number;
    nonFiniteTensors: number;
    bytes: number;
  };
  tensors: ExtractTensor[];
  onlyInBase: string[];
  onlyInFinetuned: string[];
  shapeMismatches: { name: string; baseShape: number[]; otherShape: number[] }[];
  nonFloat: string[];
  /** Where NaN/Inf were found: tensor and element count. */
  nonFinite: { name: string; elements: number }[];
  warnings: string[];
  seconds: number;
}

export const EXTRACT_SUMMARY = fields<ExtractReport['summary']>()({
  tensors: number,
  nonzeroTensors: number,
  zeroTensors: number,
  elements: number,
  nonzeroElements: number,
  l2Norm: number,
  nonFiniteTensors: number,
  bytes: number,
});

/** An extract report as the extension reads it (read.ts). */
export const EXTRACT_REPORT = fields<ExtractReport>()({ summary: EXTRACT_SUMMARY });
export type ExtractView = Present<typeof EXTRACT_REPORT>;

export function readExtractReport(x: unknown): ExtractView {
  return readReport(EXTRACT_REPORT, x);
}
