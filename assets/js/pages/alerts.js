// Alerts: failure rules (create, turn on and off, delete: owners), each
// with whether it is firing, and the anomalies the rules and the built-in
// detector raised, open or recovered.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, canWrite, isOwner, projectName } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, select, busy, toast, toastError, confirmModal, section } from '../ui.js';

const METRICS = [
  { value: 'error_rate', label: 'Error rate (0 to 1)' },
  { value: 'latency_p95', label: 'p95 latency (ms)' },
  { value: 'latency_p99', label: 'p99 latency (ms)' },
  { value: 'latency_p50', label: 'p50 latency (ms)' },
  { value: 'cost', label: 'Cost over the window (USD)' },
  { value: 'volume', label: 'Traces over the window' },
  { value: 'score', label: 'Mean evaluation score' },
];
const OPERATORS = [
  { value: 'gt', label: 'above (>)' },
  { value: 'gte', label: 'at or above (≥)' },
  { value: 'lt', label: 'below (<)' },
  { value: 'lte', label: 'at or below (≤)' },
];
const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const SEVERITY_KIND = { low: 'neutral', medium: 'warn', high: 'error', critical: 'error' };
const SYMBOL = { gt: '>', gte: '≥', lt: '<', lte: '≤' };

export function render(root, ctx) {
  const rulesBody = el('div', { class: 'list-body' });
  const anomaliesBody = el('div', { class: 'list-body' });
  const createBox = el('div', {});
  const status = select({ name: 'status', 'aria-label': 'Which anomalies', 'data-testid': 'anomaly-status' },
    [{ value: '', label: 'All' }, { value: 'open', label: 'Open' }, { value: 'recovered', label: 'Recovered' }], '');
  const refresh = el('button', { type: 'button', class: 'btn', 'data-testid': 'alerts-refresh' }, 'Refresh');
  add(root, pageHeader('Alerts', refresh),
    el('p', { class: 'muted page-sub' }, 'Failure rules are checked continuously against your traffic; a rule that fires raises an anomaly and sends failure.detected to your webhooks, once, and failure.recovered when it clears. The built-in detector flags sudden changes in each project\'s error rate, p95 latency, cost and volume.'),
    createBox, section('Failure rules', rulesBody),
    section('Anomalies', el('div', { class: 'filters' }, field('Show', status)), anomaliesBody));

  let rulesGen = 0;
  const loadRules = async () => {
    const mine = ++rulesGen;
    if (!rulesBody.firstChild) replace(rulesBody, loading());
    try {
      const data = await api('/v1/failure-rules', { signal: ctx.signal });
      if (mine !== rulesGen) return;
      const items = data.items || [];
      replace(rulesBody, items.length ? rulesTable(items, { reload: loadRules }) : empty('No failure rules.', 'Create one to be told when a metric crosses a threshold.'));
    } catch (err) {
      if (isAbort(err) || mine !== rulesGen) return;
      replace(rulesBody, errorBox(err, loadRules));
    }
  };

  let anomaliesGen = 0;
  const loadAnomalies = async () => {
    const mine = ++anomaliesGen;
    replace(anomaliesBody, loading());
    try {
      const query = status.value ? `?limit=100&status=${encodeURIComponent(status.value)}` : '?limit=100';
      const data = await api(`/v1/anomalies${query}`, { signal: ctx.signal });
      if (mine !== anomaliesGen) return;
      const items = data.anomalies || [];
      replace(anomaliesBody, items.length ? anomaliesTable(items) : empty('No anomalies.', 'What the rules and the detector raise appears here.'));
    } catch (err) {
      if (isAbort(err) || mine !== anomaliesGen) return;
      replace(anomaliesBody, errorBox(err, loadAnomalies));
    }
  };
  status.addEventListener('change', loadAnomalies);

  const reloadAll = () => { loadRules(); loadAnomalies(); };
  refresh.addEventListener('click', reloadAll);
  if (canWrite()) createBox.appendChild(createForm({ reload: reloadAll }));
  loadRules();
  loadAnomalies();
}

function createForm({ reload }) {
  const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '200', placeholder: 'Error rate above 5%', autocomplete: 'off' });
  const metric = select({ name: 'metric', required: true }, METRICS, 'error_rate');
  const operator = select({ name: 'operator', required: true }, OPERATORS, 'gt');
  const threshold = el('input', { type: 'number', name: 'threshold', required: true, step: 'any', value: '0.05' });
  const windowSecs = el('input', { type: 'number', name: 'window_secs', required: true, min: '10', max: '604800', step: '1', value: '300' });
  const severity = select({ name: 'severity' }, SEVERITIES, 'medium');
  const minSamples = el('input', { type: 'number', name: 'min_samples', min: '1', step: '1', value: '20' });
  const project = select({ name: 'project' }, [{ value: '', label: 'All projects' }, ...state.projects.map((p) => ({ value: p.id, label: p.name }))], '');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'failure-rule-create-error' });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create rule');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'failure-rule-create' },
    el('h3', { class: 'form-title' }, 'New failure rule'),
    el('div', { class: 'form-grid' },
      field('Name', name),
      field('Metric', metric),
      field('Fires when it is', operator),
      field('Threshold', threshold, 'An error rate is a share: 0.05 is 5%.'),
      field('Window (seconds)', windowSecs, 'The metric is taken over this much recent traffic.'),
      field('Severity', severity),
      field('Fewest traces', minSamples, 'With fewer in the window, the rule does not judge it.'),
      field('Project', project)),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = {
      name: name.value.trim(),
      metric: metric.value,
      operator: operator.value,
      threshold: Number(threshold.value),
      window_secs: Number(windowSecs.value),
      severity: severity.value,
      min_samples: Number(minSamples.value || 1),
    };
    if (project.value) body.project_id = project.value;
    if (!body.name || threshold.value === '' || !Number.isFinite(body.threshold)) {
      error.textContent = body.name ? 'Give a threshold.' : 'Give the rule a name.';
      error.hidden = false;
      return;
    }
    try {
      const created = await busy(submit, () => api('/v1/failure-rules', { method: 'POST', body }));
      name.value = '';
      toast(`Rule ${created.name} created`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function condition(rule) {
  const scope = rule.project_id ? projectName(rule.project_id) : 'all projects';
  return `${rule.metric} ${SYMBOL[rule.operator] || rule.operator} ${rule.threshold} over ${rule.window_secs} s · ${scope}`;
}

function rulesTable(items, { reload }) {
  const writable = canWrite();
  const owner = isOwner();
  const rows = items.map((rule) => {
    const toggle = el('input', { type: 'checkbox', 'data-testid': 'failure-rule-toggle', checked: !!rule.enabled, disabled: !writable, 'aria-label': `Enable ${rule.name}` });
    toggle.addEventListener('change', async () => {
      const enabled = toggle.checked;
      toggle.disabled = true;
      try {
        await api(`/v1/failure-rules/${encodeURIComponent(rule.id)}`, { method: 'PATCH', body: { enabled } });
        toast(`Rule ${rule.name} ${enabled ? 'enabled' : 'turned off'}`, 'success');
        reload();
      } catch (err) {
        toggle.checked = !enabled;
        toastError(err);
      } finally {
        toggle.disabled = !writable;
      }
    });
    const actions = el('div', { class: 'row-actions' });
    if (owner) {
      const del = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'failure-rule-delete' }, 'Delete');
      del.addEventListener('click', async () => {
        const yes = await confirmModal({
          title: 'Delete this rule?',
          message: `"${rule.name}" will no longer be checked. The anomalies it raised stay.`,
          confirmLabel: 'Delete rule', danger: true,
        });
        if (!yes) return;
        try {
          await busy(del, () => api(`/v1/failure-rules/${encodeURIComponent(rule.id)}`, { method: 'DELETE' }));
          toast('Rule deleted', 'success');
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      actions.append(del);
    }
    const firing = rule.state === 'firing';
    return el('tr', { 'data-testid': 'failure-rule-row', 'data-rule-id': rule.id, 'data-rule-name': rule.name },
      td(el('span', { class: 'cell-text' }, rule.name)),
      td(el('span', { class: 'mono small' }, condition(rule))),
      td(badge(rule.severity, SEVERITY_KIND[rule.severity] || 'neutral')),
      td(badge(firing ? 'firing' : 'ok', firing ? 'error' : 'ok', { 'data-testid': 'failure-rule-state' })),
      td(el('label', { class: 'check' }, toggle, rule.enabled ? 'on' : 'off')),
      td(actions));
  });
  return table({
    testid: 'failure-rules-table', caption: 'Failure rules',
    columns: [{ label: 'Name' }, { label: 'Condition' }, { label: 'Severity' }, { label: 'State' }, { label: 'Enabled' }, { label: '' }],
    rows,
  }).wrap;
}

function anomaliesTable(items) {
  const rows = items.map((a) => {
    const open = a.status === 'open';
    return el('tr', { 'data-testid': 'anomaly-row', 'data-anomaly-id': a.id, 'data-anomaly-type': a.type },
      td(timeEl(a.detected_at), 'nowrap'),
      td(el('span', { class: 'mono small' }, a.type)),
      td(badge(a.severity, SEVERITY_KIND[a.severity] || 'neutral')),
      td(el('span', { class: 'cell-text', 'data-testid': 'anomaly-description' }, a.description)),
      td(a.source === 'rule' ? 'rule' : 'detector'),
      td(a.project_id ? projectName(a.project_id) : el('span', { class: 'muted' }, 'all')),
      td(badge(open ? 'open' : 'recovered', open ? 'error' : 'ok', { 'data-testid': 'anomaly-status-badge' })),
      td(a.recovered_at ? timeEl(a.recovered_at) : el('span', { class: 'muted' }, '—'), 'nowrap'));
  });
  return table({
    testid: 'anomalies-table', caption: 'Anomalies',
    columns: [{ label: 'Detected' }, { label: 'Type' }, { label: 'Severity' }, { label: 'What' }, { label: 'Source' }, { label: 'Project' }, { label: 'Status' }, { label: 'Recovered' }],
    rows,
  }).wrap;
}
