// Number, money, duration and time formatting. Numbers use en-US grouping
// (1,234,567) so every viewer reads the same figures; times are shown in
// the viewer's own time zone.

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const dateTimeThisYear = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const dateTimeLong = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'full', timeStyle: 'long',
});
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayOnly = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const dayAndTime = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const dateOnly = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: '2-digit' });

export const DASH = '—';

function isNum(n) {
  return typeof n === 'number' && Number.isFinite(n);
}

export function fmtInt(n) {
  return isNum(n) ? integer.format(Math.round(n)) : DASH;
}

export function fmtNumber(n) {
  return isNum(n) ? decimal.format(n) : DASH;
}

/** Milliseconds as "850 ms", "1.25 s", "2m 05s", "1h 02m". */
export function fmtDuration(ms) {
  if (!isNum(ms)) return DASH;
  if (ms < 10) return `${decimal.format(Math.round(ms * 10) / 10)} ms`;
  if (ms < 1000) return `${integer.format(Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const totalSeconds = Math.round(ms / 1000);
  if (totalSeconds < 3600) {
    return `${Math.floor(totalSeconds / 60)}m ${String(totalSeconds % 60).padStart(2, '0')}s`;
  }
  const minutes = Math.floor(totalSeconds / 60);
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`;
}

/** US dollars: "$12.34", "$0.0123", "$0.000042". */
export function fmtCost(c) {
  if (!isNum(c)) return DASH;
  if (c === 0) return '$0.00';
  const abs = Math.abs(c);
  let digits = 2;
  if (abs < 1) digits = 4;
  // Two significant digits below a cent: $0.0042, $0.000014.
  if (abs < 0.01) digits = Math.min(8, 1 - Math.floor(Math.log10(abs)));
  return new Intl.NumberFormat('en-US', {
    style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: digits,
  }).format(c);
}

/** A 0–1 rate as a percentage. */
export function fmtPercent(rate, digits = 1) {
  if (!isNum(rate)) return DASH;
  return `${(rate * 100).toFixed(digits)}%`;
}

/** A 0–1 score. */
export function fmtScore(s) {
  return isNum(s) ? s.toFixed(2) : DASH;
}

export function parseTime(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A timestamp in the viewer's time zone, e.g. "Nov 30, 09:01:38" (the year when it is not this one). */
export function fmtTime(value) {
  const d = parseTime(value);
  if (!d) return DASH;
  return d.getFullYear() === new Date().getFullYear() ? dateTimeThisYear.format(d) : dateTime.format(d);
}

export function fmtTimeLong(value) {
  const d = parseTime(value);
  return d ? dateTimeLong.format(d) : '';
}

export function fmtDate(value) {
  const d = parseTime(value);
  return d ? dateOnly.format(d) : DASH;
}

/** An axis label for a bucket start, by the bucket width in ms. */
export function fmtTick(value, widthMs, spanMs) {
  const d = value instanceof Date ? value : parseTime(value);
  if (!d) return '';
  if (widthMs >= 86_400_000) return dayOnly.format(d);
  if (spanMs > 86_400_000 * 1.5) return dayAndTime.format(d);
  return timeOnly.format(d);
}

/** "3 min ago", "in 2 days". */
export function fmtRelative(value) {
  const d = parseTime(value);
  if (!d) return DASH;
  const seconds = Math.round((d.getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  if (abs < 60) return rtf.format(seconds, 'second');
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), 'minute');
  if (abs < 86_400) return rtf.format(Math.round(seconds / 3600), 'hour');
  if (abs < 86_400 * 60) return rtf.format(Math.round(seconds / 86_400), 'day');
  return fmtDate(value);
}

/** The viewer's time zone name, for labels. */
export function timeZoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  } catch {
    return 'local time';
  }
}

/** Pretty JSON when `text` parses as an object or array, else null. */
export function prettyJson(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'object') {
    try {
      return JSON.stringify(value, null, 2);
    } catch {
      return null;
    }
  }
  if (typeof value !== 'string') return null;
  const trimmed = value.trim();
  if (!(trimmed.startsWith('{') || trimmed.startsWith('['))) return null;
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2);
  } catch {
    return null;
  }
}
