// Reading the server's OpenAPI document for the API reference: operations
// in tag order, local `$ref`s followed (cycles guarded), schemas drawn as
// a tree of fields, the document's markdown-ish prose as paragraphs.
// Everything taken from the document reaches the page as text.

import { el } from './dom.js';

export const METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options'];

const isObject = (v) => !!v && typeof v === 'object' && !Array.isArray(v);

/** The node a local `$ref` ("#/components/schemas/X") names, or null. */
export function pointer(doc, ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#/')) return null;
  let node = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(node) || !Object.hasOwn(node, key)) return null;
    node = node[key];
  }
  return node;
}

/** Follows `$ref`s of a parameter, response or body to the object itself. */
export function deref(doc, node) {
  const seen = new Set();
  while (isObject(node) && typeof node.$ref === 'string' && !seen.has(node.$ref)) {
    seen.add(node.$ref);
    const target = pointer(doc, node.$ref);
    if (!isObject(target)) break;
    node = target;
  }
  return isObject(node) ? node : {};
}

const refName = (ref) => String(ref).split('/').pop();

/**
 * Every operation: {key, method, path, op, parameters, tag, haystack}.
 * `key` names it in the page's address (the operationId when it has one).
 */
export function operations(doc) {
  const list = [];
  for (const [path, rawItem] of Object.entries(isObject(doc.paths) ? doc.paths : {})) {
    const item = deref(doc, rawItem);
    for (const method of METHODS) {
      const op = item[method];
      if (!isObject(op)) continue;
      // Operation parameters override the path's own of the same name and place.
      const params = new Map();
      for (const raw of [...(item.parameters || []), ...(op.parameters || [])]) {
        const p = deref(doc, raw);
        if (typeof p.name === 'string') params.set(`${p.in}:${p.name}`, p);
      }
      const key = typeof op.operationId === 'string' && op.operationId ? op.operationId : `${method}-${path}`;
      const tag = Array.isArray(op.tags) && op.tags.length ? String(op.tags[0]) : 'other';
      const haystack = [method, path, op.summary, op.operationId, `${method} ${path}`].filter(Boolean).join(' ').toLowerCase();
      list.push({ key, method, path, op, parameters: [...params.values()], tag, haystack });
    }
  }
  return list;
}

/** The operations grouped by their first tag, in the document's tag order. */
export function groupByTag(doc, ops) {
  const groups = new Map();
  for (const t of Array.isArray(doc.tags) ? doc.tags : []) {
    if (isObject(t) && typeof t.name === 'string') groups.set(t.name, { name: t.name, description: t.description, ops: [] });
  }
  for (const o of ops) {
    if (!groups.has(o.tag)) groups.set(o.tag, { name: o.tag, ops: [] });
    groups.get(o.tag).ops.push(o);
  }
  return [...groups.values()].filter((g) => g.ops.length);
}

// ----------------------------------------------------------------- prose --

/** `code` spans and **bold** as elements, the rest as text. */
function inline(text) {
  return text.split(/(`[^`]+`|\*\*[^*]+\*\*)/).map((part) => {
    if (/^`[^`]+`$/.test(part)) return el('code', {}, part.slice(1, -1));
    if (/^\*\*[^*]+\*\*$/.test(part)) return el('strong', {}, part.slice(2, -2));
    return part;
  });
}

/** The document's markdown-ish text: headings, lists and paragraphs. */
export function prose(text, cls = 'prose') {
  const root = el('div', { class: cls });
  let para = null;
  let list = null;
  let item = null;
  const close = () => { para = null; list = null; item = null; };
  for (const line of String(text ?? '').split('\n')) {
    const heading = /^#{1,6}\s+(.*)$/.exec(line.trim());
    const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
    if (!line.trim()) {
      close();
    } else if (heading) {
      close();
      root.appendChild(el('h3', { class: 'prose-heading' }, inline(heading[1])));
    } else if (bullet) {
      para = null;
      if (!list) list = root.appendChild(el('ul', {}));
      item = list.appendChild(el('li', {}, inline(bullet[1])));
    } else if (item && /^\s/.test(line)) {
      item.append(' ', ...inline(line.trim()));
    } else {
      list = null;
      item = null;
      if (para) para.append(' ', ...inline(line.trim()));
      else para = root.appendChild(el('p', {}, inline(line.trim())));
    }
  }
  return root;
}

// --------------------------------------------------------------- schemas --

/**
 * A schema with its `$ref`s followed and `allOf` merged: {schema, name,
 * cycle, stack}. `stack` holds the refs being drawn above this one, so a
 * schema that contains itself is named instead of drawn again.
 */
function resolve(doc, raw, stack) {
  let s = isObject(raw) ? raw : {};
  let name = null;
  let next = stack;
  while (typeof s.$ref === 'string') {
    if (next.includes(s.$ref)) return { schema: {}, name: refName(s.$ref), cycle: true, stack: next };
    name = name ?? refName(s.$ref);
    next = [...next, s.$ref];
    const { $ref, ...siblings } = s;
    const target = pointer(doc, $ref);
    s = { ...(isObject(target) ? target : {}), ...siblings };
  }
  if (Array.isArray(s.allOf)) {
    const merged = { ...s, allOf: undefined, properties: { ...(s.properties || {}) }, required: [...(s.required || [])] };
    for (const part of s.allOf) {
      const r = resolve(doc, part, next);
      if (r.cycle) continue;
      merged.type = merged.type ?? r.schema.type;
      merged.description = merged.description ?? r.schema.description;
      Object.assign(merged.properties, r.schema.properties || {});
      merged.required.push(...(r.schema.required || []));
      for (const k of ['oneOf', 'anyOf', 'items', 'enum', 'additionalProperties', 'format']) merged[k] = merged[k] ?? r.schema[k];
    }
    s = merged;
  }
  return { schema: s, name, cycle: false, stack: next };
}

function types(s) {
  const list = Array.isArray(s.type) ? [...s.type] : s.type ? [s.type] : [];
  if (s.nullable === true && !list.includes('null')) list.push('null');
  return list;
}

/** "string (uuid)", "array of Span", "Project | null", "one of 2"… */
function typeLabel(doc, raw, r) {
  const s = r.schema;
  if (r.cycle) return r.name;
  const nullable = types(s).includes('null');
  let label;
  const main = types(s).filter((t) => t !== 'null');
  if (main.includes('array') || (!main.length && s.items)) {
    const items = resolve(doc, s.items, r.stack);
    label = `array of ${typeLabel(doc, s.items, items)}`;
  } else if (r.name && (main.includes('object') || s.properties || !main.length)) {
    label = r.name;
  } else if (main.length) {
    label = main.join(' | ');
    if (s.format) label += ` (${s.format})`;
  } else if (s.oneOf || s.anyOf) {
    label = `one of ${(s.oneOf || s.anyOf).length}`;
  } else if (s.properties) {
    label = 'object';
  } else if (Array.isArray(s.enum)) {
    label = typeof s.enum[0];
  } else {
    label = 'any';
  }
  return nullable ? `${label} | null` : label;
}

const CONSTRAINTS = [
  ['minimum', 'min'], ['maximum', 'max'], ['exclusiveMinimum', 'more than'], ['exclusiveMaximum', 'less than'],
  ['minLength', 'min length'], ['maxLength', 'max length'], ['minItems', 'min items'], ['maxItems', 'max items'],
  ['pattern', 'pattern'], ['default', 'default'], ['const', 'always'],
];

/** A schema's limits, allowed values and description, under its type. */
export function schemaFacts(s) {
  const limits = CONSTRAINTS.filter(([k]) => s[k] !== undefined && typeof s[k] !== 'boolean')
    .map(([k, label]) => `${label} ${JSON.stringify(s[k])}`);
  return [
    limits.length ? el('div', { class: 'schema-limits muted small' }, limits.join(' · ')) : null,
    Array.isArray(s.enum) ? el('div', { class: 'chips schema-enum' }, el('span', { class: 'muted small' }, 'one of'),
      s.enum.map((v) => el('code', { class: 'chip' }, JSON.stringify(v)))) : null,
    s.description ? prose(s.description, 'prose schema-desc') : null,
  ];
}

/** The fields under a schema: properties, array items' fields, variants. */
function children(doc, s, stack, depth) {
  const rows = [];
  const required = new Set(Array.isArray(s.required) ? s.required : []);
  for (const [name, sub] of Object.entries(isObject(s.properties) ? s.properties : {})) {
    rows.push(fieldRow(doc, name, sub, required.has(name), stack, depth));
  }
  if (isObject(s.additionalProperties)) rows.push(fieldRow(doc, '{any key}', s.additionalProperties, false, stack, depth));
  const items = s.items && resolve(doc, s.items, stack);
  if (items && !items.cycle) rows.push(...children(doc, items.schema, items.stack, depth));
  for (const kind of ['oneOf', 'anyOf']) {
    if (!Array.isArray(s[kind])) continue;
    s[kind].forEach((variant, i) => rows.push(fieldRow(doc, `${kind === 'oneOf' ? 'one of' : 'any of'} #${i + 1}`, variant, false, stack, depth, true)));
  }
  return rows;
}

/** Whether a schema has fields to list under it. */
function hasFields(doc, s, stack) {
  if (isObject(s.properties) && Object.keys(s.properties).length) return true;
  if (isObject(s.additionalProperties) || Array.isArray(s.oneOf) || Array.isArray(s.anyOf)) return true;
  const items = s.items && resolve(doc, s.items, stack);
  return !!items && !items.cycle && hasFields(doc, items.schema, items.stack);
}

function fieldRow(doc, name, raw, required, stack, depth, variant = false) {
  const r = resolve(doc, raw, stack);
  const s = r.schema;
  const head = [
    el('code', { class: variant ? 'schema-name schema-variant' : 'schema-name' }, name),
    el('span', { class: 'schema-type' }, typeLabel(doc, raw, r)),
    required ? el('span', { class: 'badge badge-warn' }, 'required') : null,
    s.deprecated ? el('span', { class: 'badge' }, 'deprecated') : null,
    s.readOnly ? el('span', { class: 'badge' }, 'read-only') : null,
    r.cycle ? el('span', { class: 'muted small' }, '(contains itself: see above)') : null,
  ];
  const facts = schemaFacts(s);
  if (r.cycle || depth >= 12 || !hasFields(doc, s, r.stack)) {
    return el('li', { class: 'schema-row' }, el('div', { class: 'schema-head' }, head), facts);
  }
  // Nested fields fold, and are drawn when first opened: a large body
  // reads as its top level first and costs nothing until asked for.
  const nested = el('ul', { class: 'schema-tree', hidden: true });
  const toggle = el('button', { type: 'button', class: 'schema-head schema-toggle', 'aria-expanded': 'false' }, head);
  toggle.addEventListener('click', () => {
    if (!nested.firstChild) nested.append(...children(doc, s, r.stack, depth + 1));
    nested.hidden = !nested.hidden;
    toggle.setAttribute('aria-expanded', String(!nested.hidden));
  });
  return el('li', { class: 'schema-row' }, toggle, facts, nested);
}

/** A schema drawn as a tree: its type, its description, then its fields. */
export function schemaView(doc, raw, testid) {
  const r = resolve(doc, raw, []);
  const rows = children(doc, r.schema, r.stack, 0);
  return el('div', { class: 'schema', 'data-testid': testid },
    el('div', { class: 'schema-top' }, el('span', { class: 'schema-type' }, typeLabel(doc, raw, r))),
    schemaFacts(r.schema),
    rows.length ? el('ul', { class: 'schema-tree' }, rows) : null);
}

/** A starting value for a body: the schema's example, else its required fields. */
export function sample(doc, raw, stack = []) {
  const r = resolve(doc, raw, stack);
  const s = r.schema;
  if (r.cycle || r.stack.length > 6) return null;
  for (const k of ['example', 'default', 'const']) if (s[k] !== undefined) return s[k];
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if (Array.isArray(s.enum) && s.enum.length) return s.enum[0];
  const variants = s.oneOf || s.anyOf;
  if (Array.isArray(variants) && variants.length) return sample(doc, variants[0], r.stack);
  const type = types(s).find((t) => t !== 'null') ?? (s.properties ? 'object' : null);
  if (type === 'object') {
    const out = {};
    for (const name of Array.isArray(s.required) ? s.required : []) {
      if (isObject(s.properties) && Object.hasOwn(s.properties, name)) out[name] = sample(doc, s.properties[name], r.stack);
    }
    return out;
  }
  if (type === 'array') return [];
  if (type === 'string') return '';
  if (type === 'integer' || type === 'number') return typeof s.minimum === 'number' ? s.minimum : 0;
  if (type === 'boolean') return false;
  return null;
}

/** The JSON media of a body or response: {schema, example} (example may be undefined). */
export function jsonMedia(content) {
  if (!isObject(content)) return null;
  const type = Object.keys(content).find((t) => /json/i.test(t));
  if (!type) return null;
  const media = isObject(content[type]) ? content[type] : {};
  let example = media.example;
  if (example === undefined && isObject(media.examples)) {
    const first = Object.values(media.examples).find(isObject);
    example = first?.value;
  }
  return { type, schema: media.schema, example };
}
