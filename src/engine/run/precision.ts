import { DEFAULT_RULE, MERGE_RULES } from '../../shared/jobs/choices';
import { need } from '../../shared/jobs/request';
import { parsePrecisionDtypes, precisionJob, precisionText } from '../jobs/precision';
import { Runner, splitList } from './runner';

export const precision: Runner<'precision'> = async (req, ctx) => {
  const dtypes = parsePrecisionDtypes(splitList(req.dtypes ?? ['fp16', 'bf16']));
  // No --rule: every rule, the default first (the dtype-level figures are the default rule's).
  const rules = req.rule !== undefined ? [req.rule] : [DEFAULT_RULE, ...MERGE_RULES.filter((r) => r !== DEFAULT_RULE)];
  const r = await precisionJob({ base: need(req, 'base'), adapter: need(req, 'adapter'), dtypes, rules }, ctx);
  return { report: r, text: precisionText(r) };
};
