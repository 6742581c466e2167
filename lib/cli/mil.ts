/**
 * `mstar train-mil` and `mstar predict-mil`: commander factories (wired into lib/cli.ts)
 * over trainMil / predictMil. Flags are validated here; the API validates again.
 */
import { Command, Option } from 'commander';
import { setNumThreads } from '../index.js';
import { predictMil } from '../mil/predict.js';
import { trainMil, type MilModelKind } from '../mil/train.js';
import { parseInteger, parseNonNegativeInt, parseNonNegativeNumber, parsePositiveInt, parsePositiveNumber } from './parse.js';

interface TrainFlags {
  csv: string; features: string; out: string; model: MilModelKind; task?: 'classification' | 'survival'; epochs: number; lr: number;
  weightDecay: number; optimizer: 'adam' | 'adamw'; scheduler: 'cosine' | 'none'; patience: number; seed: number; bins: number;
  bootstrap: number; activation: 'relu' | 'gelu'; dropout: boolean; resume: boolean; threads?: number; json?: boolean;
}

export function trainMilCommand(): Command {
  return new Command('train-mil')
    .description('train a slide-level MIL head (ABMIL, gated ABMIL, TransMIL) on patch features for classification or survival')
    .requiredOption('--csv <path>', 'cohort CSV in an mSTAR layout: Study,ID,Event,Status,WSI,split (survival) or case,slide,label,fold (classification)')
    .requiredOption('--features <dir>', 'folder of per-slide features (.pt, .h5 or .safetensors)')
    .requiredOption('--out <dir>', 'output folder: metrics.json, predictions.csv, best.safetensors, roc.png/km.png; resumes from it')
    .addOption(new Option('--model <name>', 'MIL head').choices(['abmil', 'abmil-gated', 'transmil']).default('abmil'))
    .addOption(new Option('--task <task>', 'checked against the CSV layout').choices(['classification', 'survival']))
    .option('--epochs <n>', 'maximum epochs', parsePositiveInt, 20)
    .option('--lr <lr>', 'learning rate (cosine-annealed to 0 over the epochs)', parsePositiveNumber, 2e-4)
    .option('--weight-decay <wd>', 'weight decay', parseNonNegativeNumber, 1e-5)
    .addOption(new Option('--optimizer <name>', 'optimizer').choices(['adam', 'adamw']).default('adam'))
    .addOption(new Option('--scheduler <name>', 'learning-rate schedule per epoch').choices(['cosine', 'none']).default('cosine'))
    .option('--patience <n>', 'stop after this many epochs without validation improvement (0: never)', parseNonNegativeInt, 10)
    .option('--seed <n>', 'seed for initialization, bag order and dropout', parseInteger, 1)
    .option('--bins <n>', 'survival time bins', parsePositiveInt, 4)
    .option('--bootstrap <n>', 'bootstrap resamples for the 95% intervals', parsePositiveInt, 1000)
    .addOption(new Option('--activation <name>', 'activation after the input projection').choices(['relu', 'gelu']).default('relu'))
    .option('--no-dropout', 'disable the heads\' dropout')
    .option('--no-resume', 'start over even if <out>/last.safetensors exists')
    .option('--threads <n>', 'native threads', parsePositiveInt)
    .option('--json', 'print the final metrics as one JSON line')
    .action(async (flags: TrainFlags) => {
      if (flags.threads) setNumThreads(flags.threads);
      const result = await trainMil({
        csv: flags.csv, features: flags.features, out: flags.out, model: flags.model, task: flags.task, epochs: flags.epochs, lr: flags.lr,
        weightDecay: flags.weightDecay, optimizer: flags.optimizer, scheduler: flags.scheduler, patience: flags.patience, seed: flags.seed,
        bins: flags.bins, bootstrap: flags.bootstrap, activation: flags.activation, dropout: flags.dropout, resume: flags.resume,
        log: (line) => console.error(line),
      });
      const m = result.metrics;
      if (flags.json) {
        console.log(JSON.stringify({ outDir: result.outDir, task: m.task, bestEpoch: result.bestEpoch, val: m.val, test: m.test }));
        return;
      }
      const fmt = (s: { value: number; mean: number; ciLower: number; ciUpper: number }): string =>
        `${s.value.toFixed(4)} (bootstrap ${s.mean.toFixed(4)}, 95% CI ${s.ciLower.toFixed(4)}–${s.ciUpper.toFixed(4)})`;
      console.log(`best epoch ${result.bestEpoch} of ${result.epochsRun} (selected on validation ${m.selection.metric} ${m.selection.value?.toFixed?.(4)})`);
      for (const [name, s] of [['val', m.val], ['test', m.test]] as const) {
        if (!s) continue;
        if ('aucMacro' in s) {
          console.log(`${name}: macro AUC ${fmt(s.aucMacro)}; balanced acc ${fmt(s.balancedAccuracy)}; macro F1 ${fmt(s.f1Macro)}; weighted F1 ${fmt(s.f1Weighted)}`);
        } else {
          console.log(`${name}: C-index ${fmt(s.cIndex)}; log-rank p ${s.riskGroups.logRank.pValue.toExponential(3)} (high ${s.riskGroups.high} / low ${s.riskGroups.low})`);
        }
      }
      console.log(`outputs in ${result.outDir}`);
    });
}

interface PredictFlags {
  model: 'abmil' | 'abmil-gated' | 'transmil'; weights: string; nClasses?: number; out: string; threads?: number;
}

export function predictMilCommand(): Command {
  return new Command('predict-mil')
    .description('apply a trained MIL head (ours or an mSTAR PyTorch state dict) to bags of features')
    .addOption(new Option('--model <name>', 'MIL head').choices(['abmil', 'abmil-gated', 'transmil']).makeOptionMandatory())
    .requiredOption('--weights <path>', 'weights: .pth/.pt (PyTorch) or .safetensors')
    .option('--n-classes <c>', 'expected number of outputs (checked against the weights)', parsePositiveInt)
    .requiredOption('--out <path>', 'output .safetensors: logits [B, C] in argument order, attention.<i> per bag')
    .option('--threads <n>', 'native threads', parsePositiveInt)
    .argument('<bags...>', 'feature files (.pt, .h5, .safetensors), one bag each')
    .action(async (bags: string[], flags: PredictFlags) => {
      if (flags.threads) setNumThreads(flags.threads);
      const r = await predictMil({ model: flags.model, weights: flags.weights, nClasses: flags.nClasses, bags, out: flags.out });
      console.log(`wrote ${flags.out}: logits [${bags.length}, ${r.nClasses}] and ${bags.length} attention vector(s)`);
    });
}
