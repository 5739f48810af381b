// Evaluations: score trends per metric, the list of evaluations with
// metric and score filters, and the auto-evaluation rules.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, canWrite, projectName, projectOrFirst, refreshProjects, fillProjectSelect } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, pager, field, select, busy, toast, toastError, confirmModal, section } from '../ui.js';
import { timeChart, fillBuckets } from '../chart.js';
import { fmtScore, fmtInt, fmtPercent } from '../format.js';
import { catalog, RULE_KINDS, evalStatusBadge, evalLabelBadge } from './trace.js';

const PAGE_SIZE = 50;
const TREND_DAYS = 7;
const TREND_BUCKET = { name: '6h', ms: 6 * 3_600_000 };
/** Rule kinds that need parameters in the config (pattern, value, max…). */
const PARAM_RULE_KINDS = ['regex', 'not_regex', 'contains', 'not_contains', 'equals', 'json_schema', 'latency_max_ms', 'cost_max', 'tokens_max', 'length'];

const saved = { metric: '', scoreMin: '', scoreMax: '', pages: [{ to: null, skip: [] }], projectId: null };

export function render(root, ctx) {
  if (saved.projectId !== state.projectId) {
    saved.pages = [{ to: null, skip: [] }];
    saved.projectId = state.projectId;
  }
  const trendsBody = el('div', {});
  const listBody = el('div', { class: 'list-body' });
  const rulesBody = el('div', {});

  // ----------------------------------------------------------- filters --
  const metric = el('input', { type: 'text', name: 'metric', 'data-testid': 'filter-metric', placeholder: 'Metric (e.g. not_empty)', 'aria-label': 'Metric', value: saved.metric, list: 'metric-names', spellcheck: 'false' });
  const metricNames = el('datalist', { id: 'metric-names' });
  const scoreMin = el('input', { type: 'number', name: 'score_min', 'data-testid': 'filter-score-min', min: '0', max: '1', step: '0.05', placeholder: 'Min score', 'aria-label': 'Minimum score', value: saved.scoreMin });
  const scoreMax = el('input', { type: 'number', name: 'score_max', 'data-testid': 'filter-score-max', min: '0', max: '1', step: '0.05', placeholder: 'Max score', 'aria-label': 'Maximum score', value: saved.scoreMax });
  const apply = el('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'evals-apply' }, 'Apply');
  const filterForm = el('form', { class: 'toolbar filters', 'data-testid': 'evals-filters' }, metric, metricNames, scoreMin, scoreMax, apply);
  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    saved.metric = metric.value.trim();
    saved.scoreMin = scoreMin.value;
    saved.scoreMax = scoreMax.value;
    saved.pages = [{ to: null, skip: [] }];
    loadList();
    loadTrends();
  });

  add(root, 
    pageHeader('Evaluations'),
    el('p', { class: 'muted page-sub' }, 'Scores run by hand or by auto-evaluation rules. Higher is better: pass 1, warn 0.5, fail 0.'),
    filterForm,
    section('Score trends', trendsBody),
    section('Evaluations', listBody),
    section('Auto-evaluation rules', el('p', { class: 'muted' }, 'Each new trace in a rule\'s project is evaluated by the rule (sampled by its rate).'), rulesBody));

  // ------------------------------------------------------------ trends --
  let trendGen = 0;
  const loadTrends = async () => {
    const mine = ++trendGen;
    const projectId = projectOrFirst();
    if (!projectId) {
      replace(trendsBody, empty('No project to show trends for.'));
      return;
    }
    replace(trendsBody, loading());
    const to = Date.now();
    const from = to - TREND_DAYS * 86_400_000;
    try {
      const data = await api('/v1/eval/trends', {
        signal: ctx.signal,
        query: { project_id: projectId, metric: saved.metric, bucket: TREND_BUCKET.name, from: new Date(from).toISOString(), to: new Date(to).toISOString() },
      });
      if (mine !== trendGen) return;
      replace(trendsBody, trendsView(data, from, to, projectId));
    } catch (err) {
      if (isAbort(err) || mine !== trendGen) return;
      replace(trendsBody, errorBox(err, loadTrends));
    }
  };

  // -------------------------------------------------------------- list --
  let listGen = 0;
  const loadList = async () => {
    const mine = ++listGen;
    replace(listBody, loading());
    const page = saved.pages[saved.pages.length - 1];
    try {
      const data = await api('/v1/eval', {
        signal: ctx.signal,
        query: {
          project_id: state.projectId, metric: saved.metric, score_min: saved.scoreMin, score_max: saved.scoreMax,
          to: page.to, limit: PAGE_SIZE + 1 + page.skip.length,
        },
      });
      if (mine !== listGen) return;
      const all = (Array.isArray(data?.evals) ? data.evals : []).filter((e) => !page.skip.includes(e.id));
      const list = all.slice(0, PAGE_SIZE);
      const hasNext = all.length > PAGE_SIZE;
      for (const name of new Set(list.map((e) => e.metric_name))) {
        if (![...metricNames.options].some((o) => o.value === name)) metricNames.appendChild(el('option', { value: name }));
      }
      const rows = list.map((e) => el('tr', { 'data-testid': 'eval-row', 'data-eval-id': e.id, 'data-metric': e.metric_name },
        td(timeEl(e.created_at), 'nowrap'),
        td(el('a', { href: `#/traces/${encodeURIComponent(e.trace_id)}`, class: 'mono small' }, String(e.trace_id).slice(0, 8))),
        td(el('span', { class: 'cell-code' }, e.metric_name), 'mono'),
        td(e.evaluator_type || '—'),
        td(evalStatusBadge(e.status)),
        td(fmtScore(e.score), 'num'),
        td(evalLabelBadge(e.label) || el('span', { class: 'muted' }, '—')),
        td(e.reasoning ? el('span', { class: 'clamp', title: e.reasoning }, e.reasoning) : el('span', { class: 'muted' }, '—'), 'reasoning'),
        td(e.rule_id ? el('span', { class: 'muted small' }, 'rule') : el('span', { class: 'muted small' }, 'manual'))));
      const built = table({
        testid: 'evals-table', caption: 'Evaluations',
        columns: [{ label: 'Queued' }, { label: 'Trace' }, { label: 'Metric' }, { label: 'Type' }, { label: 'Status' },
          { label: 'Score', class: 'num' }, { label: 'Label' }, { label: 'Reasoning' }, { label: 'Source' }],
        rows,
      });
      const n = saved.pages.length;
      replace(listBody, built.wrap,
        list.length ? null : empty(saved.metric || saved.scoreMin || saved.scoreMax ? 'No evaluations match these filters.' : 'No evaluations yet.',
          'Run one from a trace\'s page, or add an auto-evaluation rule below.'),
        pager({
          page: n, hasPrev: n > 1, hasNext,
          onPrev: () => { saved.pages.pop(); loadList(); },
          onNext: () => {
            const last = list[list.length - 1];
            saved.pages.push({ to: last.created_at, skip: list.filter((e) => e.created_at === last.created_at).map((e) => e.id) });
            loadList();
          },
        }));
    } catch (err) {
      if (isAbort(err) || mine !== listGen) return;
      replace(listBody, errorBox(err, loadList));
    }
  };

  // ------------------------------------------------------------- rules --
  let rulesGen = 0;
  const loadRules = async () => {
    const mine = ++rulesGen;
    replace(rulesBody, loading());
    try {
      const data = await api('/v1/eval-rules', { signal: ctx.signal, query: { project_id: state.projectId } });
      if (mine !== rulesGen) return;
      const items = Array.isArray(data?.items) ? data.items : [];
      replace(rulesBody, rulesTable(items, loadRules), canWrite() ? ruleForm(loadRules) : null);
    } catch (err) {
      if (isAbort(err) || mine !== rulesGen) return;
      replace(rulesBody, errorBox(err, loadRules));
    }
  };

  loadTrends();
  loadList();
  loadRules();
}

function trendsView(data, from, to, projectId) {
  const raw = Array.isArray(data?.buckets) ? data.buckets : [];
  const byMetric = new Map();
  for (const b of raw) {
    if (!byMetric.has(b.metric)) byMetric.set(b.metric, { count: 0, passed: 0 });
    const m = byMetric.get(b.metric);
    m.count += b.count || 0;
    m.passed += (b.pass_rate || 0) * (b.count || 0);
  }
  const metrics = [...byMetric.entries()].sort((a, b) => b[1].count - a[1].count).slice(0, 6).map(([name]) => name);
  const points = new Map();
  for (const b of raw) {
    if (!metrics.includes(b.metric)) continue;
    const t = Date.parse(b.time);
    if (Number.isNaN(t)) continue;
    if (!points.has(t)) points.set(t, {});
    points.get(t)[b.metric] = b.avg_score;
  }
  const buckets = fillBuckets(points, from, to, TREND_BUCKET.ms, () => ({}));
  const chart = timeChart({
    testid: 'chart-evals', label: 'Mean evaluation score per metric', kind: 'line', widthMs: TREND_BUCKET.ms, buckets, yMax: 1,
    series: metrics.map((name, i) => ({ key: name, label: name, cls: `series-${(i % 6) + 1}` })),
    yFormat: (v) => fmtScore(v),
  });
  const note = el('p', { class: 'muted small' },
    `Mean score per ${TREND_BUCKET.name}, last ${TREND_DAYS} days, project ${projectName(projectId) || projectId}`,
    state.projectId ? '' : ' (pick a project in the sidebar to see another)', '.');
  const summary = metrics.length ? el('div', { class: 'metric-summary' }, metrics.map((name) => {
    const m = byMetric.get(name);
    return el('span', { class: 'chip' }, el('span', { class: 'mono' }, name), ` · ${fmtInt(m.count)} runs · ${fmtPercent(m.count ? m.passed / m.count : null, 0)} pass`);
  })) : empty('No completed evaluations in the last 7 days.');
  return el('div', { class: 'stack' }, note, chart, summary);
}

function ruleConfig(rule) {
  return rule.config && typeof rule.config === 'object' ? rule.config : {};
}

function rulesTable(items, reload) {
  const writable = canWrite();
  const rows = items.map((rule) => {
    const config = ruleConfig(rule);
    const toggle = el('input', { type: 'checkbox', 'data-testid': 'rule-toggle', checked: !!rule.enabled, disabled: !writable, 'aria-label': `Enable ${rule.metric_name}` });
    toggle.addEventListener('change', async () => {
      const enabled = toggle.checked;
      toggle.disabled = true;
      try {
        await api(`/v1/eval-rules/${encodeURIComponent(rule.id)}`, { method: 'PATCH', body: { enabled } });
        rule.enabled = enabled;
        toast(`Rule ${rule.metric_name} ${enabled ? 'enabled' : 'paused'}`, 'success');
      } catch (err) {
        toggle.checked = !enabled;
        toastError(err);
      } finally {
        toggle.disabled = !writable;
      }
    });
    const del = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'rule-delete', disabled: !writable }, 'Delete');
    del.addEventListener('click', async () => {
      const yes = await confirmModal({
        title: 'Delete this rule?',
        message: `New traces will no longer be evaluated with "${rule.metric_name}". Evaluations already made stay.`,
        confirmLabel: 'Delete rule', danger: true,
      });
      if (!yes) return;
      try {
        await busy(del, () => api(`/v1/eval-rules/${encodeURIComponent(rule.id)}`, { method: 'DELETE' }));
        toast('Rule deleted', 'success');
        reload();
      } catch (err) {
        toastError(err);
      }
    });
    const what = config.preset ? `preset ${config.preset}` : config.rule ? `rule ${config.rule}` : config.prompt ? 'custom rubric' : rule.metric_name;
    const { sample_rate: rate, filter } = config;
    return el('tr', { 'data-testid': 'rule-row', 'data-rule-metric': rule.metric_name, 'data-rule-id': rule.id },
      td(el('span', { class: 'cell-code' }, rule.metric_name), 'mono'),
      td(projectName(rule.project_id) || el('span', { class: 'mono small' }, rule.project_id)),
      td(rule.evaluator_type),
      td(what, 'mono small'),
      td(typeof rate === 'number' ? fmtPercent(rate, 0) : '100%', 'num'),
      td(filter ? el('code', { class: 'small' }, JSON.stringify(filter)) : el('span', { class: 'muted' }, 'all traces')),
      td(el('label', { class: 'switch' }, toggle, el('span', { class: 'switch-label' }, rule.enabled ? 'On' : 'Off'))),
      td(timeEl(rule.created_at), 'nowrap'),
      td(del));
  });
  const built = table({
    testid: 'rules-table', caption: 'Auto-evaluation rules',
    columns: [{ label: 'Metric' }, { label: 'Project' }, { label: 'Type' }, { label: 'Evaluates' }, { label: 'Sample', class: 'num' },
      { label: 'Filter' }, { label: 'Enabled' }, { label: 'Created' }, { label: '' }],
    rows,
  });
  // Keep the On/Off text in step with the box.
  built.table.addEventListener('change', (e) => {
    const box = e.target.closest('[data-testid=rule-toggle]');
    if (box) box.parentElement.querySelector('.switch-label').textContent = box.checked ? 'On' : 'Off';
  });
  return el('div', {}, built.wrap, items.length ? null : empty('No auto-evaluation rules.', canWrite() ? 'Add one below to evaluate new traces automatically.' : null));
}

function ruleForm(reload) {
  const metricName = el('input', { type: 'text', name: 'metric_name', maxlength: '128', placeholder: 'Defaults to the rule\'s name', spellcheck: 'false' });
  const evaluatorType = select({ name: 'evaluator_type' }, [{ value: 'rule', label: 'Rule (in-process)' }, { value: 'llm', label: 'LLM judge (catalog preset)' }], 'rule');
  const rule = el('select', { name: 'rule', required: true });
  const sampleRate = el('input', { type: 'number', name: 'sample_rate', min: '0', max: '1', step: '0.01', value: '1', required: true });
  const project = select({ name: 'project', required: true }, state.projects.map((p) => ({ value: p.id, label: p.name })), projectOrFirst());
  refreshProjects().then(() => fillProjectSelect(project)).catch(() => {});
  const extra = el('textarea', { name: 'config', rows: '3', class: 'mono', placeholder: '{"pattern": "^yes", "filter": {"model": "gpt-4o*"}}', spellcheck: 'false' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Add rule');

  let presets = [];
  const fillRules = () => {
    if (evaluatorType.value === 'llm') {
      replace(rule, presets.length
        ? presets.map((p) => el('option', { value: p.name, title: p.description || '' }, p.name))
        : el('option', { value: '' }, 'Loading the catalog…'));
    } else {
      replace(rule,
        el('optgroup', { label: 'No parameters' }, RULE_KINDS.map((k) => el('option', { value: k }, k))),
        el('optgroup', { label: 'Needs parameters (advanced config)' }, PARAM_RULE_KINDS.map((k) => el('option', { value: k }, k))));
    }
  };
  fillRules();
  evaluatorType.addEventListener('change', fillRules);
  catalog().then((list) => { presets = list; if (evaluatorType.value === 'llm') fillRules(); }).catch(() => {});

  const form = el('form', { class: 'stack form-card', 'data-testid': 'rule-create' },
    el('h3', { class: 'form-title' }, 'New rule'),
    el('div', { class: 'form-grid' },
      field('Metric name', metricName),
      field('Evaluator', evaluatorType),
      field('Rule or preset', rule),
      field('Sample rate', sampleRate, '0 to 1; 1 evaluates every trace.'),
      field('Project', project)),
    el('details', { class: 'advanced' },
      el('summary', {}, 'Advanced config (JSON)'),
      field('Extra config', extra, 'Merged into the rule\'s config: rule parameters (pattern, value, max…), field, filter.')),
    error,
    el('div', {}, submit));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const fail = (text) => { error.textContent = text; error.hidden = false; };
    const rate = Number(sampleRate.value);
    if (sampleRate.value === '' || !Number.isFinite(rate) || rate < 0 || rate > 1) return fail('Sample rate must be a number from 0 to 1.');
    if (!rule.value) return fail('Pick a rule or preset.');
    if (!project.value) return fail('Pick a project.');
    let config = {};
    if (extra.value.trim()) {
      try {
        config = JSON.parse(extra.value);
      } catch (err) {
        return fail(`Extra config is not valid JSON: ${err.message}`);
      }
      if (!config || typeof config !== 'object' || Array.isArray(config)) return fail('Extra config must be a JSON object.');
    }
    if (evaluatorType.value === 'llm') config.preset = rule.value;
    else config.rule = rule.value;
    config.sample_rate = rate;
    const body = {
      project_id: project.value,
      metric_name: metricName.value.trim() || rule.value,
      evaluator_type: evaluatorType.value,
      config,
    };
    try {
      await busy(submit, () => api('/v1/eval-rules', { method: 'POST', body }));
      toast(`Rule ${body.metric_name} added`, 'success');
      reload();
    } catch (err) {
      fail(errorText(err));
    }
    return undefined;
  });
  return form;
}
