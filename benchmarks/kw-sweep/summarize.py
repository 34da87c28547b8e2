#!/usr/bin/env python3
"""Markdown tables from the sweep's JSONL files (sweep_official.py and train-tfjs.mjs).

  python3 summarize.py results/p1.jsonl [results/p2.jsonl ...]   # official PyTorch runs
  python3 summarize.py --tfjs results/tfjs.jsonl                   # the project's tfjs runs
One table per setting: per variant the parameters (x plain), test accuracy per seed, mean and
sample std, the difference to plain's mean, and the time per step.
"""
import json
import statistics as st
import sys
from collections import OrderedDict

ORDER = ['plain', 'kw1x', 'kw1/2x', 'kw1/4x', 'kw1x@s2', 'kw1/2x@s2', 'kw1/4x@s2', 'kw1x@s12',
         'kw1/2x@s12', 'kw1/4x@s12']
SETTING_KEYS = ['dataset', 'width', 'train', 'test', 'epochs', 'steps', 'batch', 'opt', 'lr', 'sched',
                'tau', 'floor', 'bn_passes']


def load(paths, tfjs):
    rows = []
    for p in paths:
        for line in open(p):
            r = json.loads(line)
            if 'error' in r:
                continue
            if tfjs:
                s = dict(r['setting'])
                s['steps'] = r['steps']
                rows.append({'setting': s, 'name': r['variant'], 'seed': r['seed'], 'params': r['params'],
                             'acc': r['acc'], 'ms': r['cpuMsPerStep'], 'curve': []})
            else:
                c = dict(r['cfg'])
                name = c.pop('name')
                for k in ('variant', 'budget', 'convert', 'ds', 'eval_at', 'cell', 'reduction'):
                    c.pop(k, None)
                c['steps'] = r['steps']
                rows.append({'setting': c, 'name': name, 'seed': r['seed'], 'params': r['params'],
                             'acc': r['acc'], 'ms': r['ms_per_step'], 'curve': r['curve']})
    return rows


def fmt_setting(s):
    d = {'dataset': 'mnist', 'width': 1, 'batch': 64, 'opt': 'adam', 'sched': 'const', 'floor': 16}
    parts = []
    for k in SETTING_KEYS:
        if k in s and (k not in d or s[k] != d[k] or k in ('dataset',)):
            parts.append(f'{k} {s[k]}')
        elif k in d and k in ('opt', 'batch'):
            parts.append(f'{k} {d[k]}')
    return ', '.join(parts)


def main():
    args = sys.argv[1:]
    tfjs = '--tfjs' in args
    paths = [a for a in args if not a.startswith('--')]
    rows = load(paths, tfjs)
    groups = OrderedDict()
    for r in rows:
        key = json.dumps(r['setting'], sort_keys=True)
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        s = json.loads(key)
        by = OrderedDict()
        for r in sorted(rs, key=lambda r: (ORDER.index(r['name']) if r['name'] in ORDER else 99, r['seed'])):
            by.setdefault(r['name'], []).append(r)
        plain = by.get('plain')
        pm = st.mean(r['acc'] for r in plain) if plain else None
        pp = plain[0]['params'] if plain else None
        print(f'\n**{fmt_setting(s)}**\n')
        print('| variant | params | x plain | test acc % per seed | mean ± std | vs plain | ms/step |')
        print('|---|---:|---:|---|---|---:|---:|')
        for name, vs in by.items():
            accs = [100 * r['acc'] for r in vs]
            mean = st.mean(accs)
            sd = st.stdev(accs) if len(accs) > 1 else 0.0
            seeds = ' / '.join(f'{a:.2f}' for a in accs) + f' (seeds {",".join(str(r["seed"]) for r in vs)})'
            diff = '' if pm is None else f'{mean - 100 * pm:+.2f}'
            ratio = '' if pp is None else f'{vs[0]["params"] / pp:.2f}'
            ms = st.mean(r['ms'] for r in vs)
            print(f'| {name} | {vs[0]["params"]:,} | {ratio} | {seeds} | {mean:.2f} ± {sd:.2f} | {diff} | {ms:.0f} |')
        curves = [r for r in rs if r['curve'] and len(r['curve']) > 1]
        if curves:
            steps = [c['step'] for c in curves[0]['curve']]
            print(f'\ntest accuracy % along the run (mean over seeds; tau schedule of the full run):\n')
            print('| variant | ' + ' | '.join(f'step {x}' for x in steps) + ' |')
            print('|---|' + '---:|' * len(steps))
            for name, vs in by.items():
                cols = []
                for i in range(len(steps)):
                    v = [100 * r['curve'][i]['acc'] for r in vs if len(r['curve']) > i]
                    cols.append(f'{st.mean(v):.1f}' if v else '')
                print(f'| {name} | ' + ' | '.join(cols) + ' |')


if __name__ == '__main__':
    main()
