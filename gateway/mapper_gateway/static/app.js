// mapper-gateway dashboard. One EventSource carries every live value; GET /api/v1/devices
// gives the starting state, again after a reconnect and when the set of devices changes.
// A sparkline is seeded once, when it is built, from the property's history in the local
// store. Nothing polls. Text only ever goes into the page through textContent, never as HTML.
'use strict';

(() => {
  const HISTORY = 60; // points per sparkline
  const NUMERIC = new Set(['INT', 'FLOAT', 'DOUBLE']);
  const TOKEN_KEY = 'mapper-gateway-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const AUTH_FAILURES = new Set([401, 403, 429]);
  const SEEDS_AT_ONCE = 4; // history requests in flight: a big fleet does not flood the gateway

  const $ = (id) => document.getElementById(id);
  const list = $('devices');

  const devices = new Map(); // device id -> {card, stateEl, errorEl, props: Map(name -> prop)}
  const dirty = new Set(); // props to repaint at the next animation frame
  let frame = 0;
  let serial = 0; // element ids: device ids contain '/', so they are not used in ids
  let source = null;
  let retry = 0;
  let backoff = 1000;
  let memoryToken = ''; // when sessionStorage is unavailable (privacy modes)
  const seedQueue = []; // [deviceId, prop] of sparklines waiting for their history
  let seeding = 0;

  // -- token ----------------------------------------------------------------------------------

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return memoryToken;
    }
  }

  function storeToken(token) {
    memoryToken = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // memoryToken is enough for this page's life
    }
    $('token-state').textContent = token ? 'set' : 'none';
  }

  // The demo prints a URL carrying ?token=: keep the token for this tab, then take it out of
  // the address bar so it stays out of the history, bookmarks and screenshots.
  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const token = url.searchParams.get('token');
    if (token !== null) {
      url.searchParams.delete('token');
      window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash);
    }
    storeToken(token !== null ? token : readToken());
  }

  function askForToken(message) {
    notice(message);
    $('auth').open = true;
    $('token').focus();
  }

  // -- API ------------------------------------------------------------------------------------

  // Paths are relative so the page also works behind a proxy that serves it under a prefix.
  async function api(method, path, body) {
    const token = readToken();
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null; // not JSON (a proxy's error page): the status says enough
    }
    return { status: response.status, data };
  }

  function propertyPath(deviceId, name) {
    const cut = deviceId.indexOf('/');
    const parts = [deviceId.slice(0, cut), deviceId.slice(cut + 1), 'properties', name];
    return `api/v1/devices/${parts.map(encodeURIComponent).join('/')}`;
  }

  function refusal(result) {
    const data = result.data || {};
    return { reason: data.reason || `HTTP ${result.status}`, message: data.message || '' };
  }

  let loading = null;
  let reloadAgain = false;

  // One request at a time; a call while one is running makes exactly one more afterwards.
  function loadDevices() {
    if (loading) {
      reloadAgain = true;
      return loading;
    }
    loading = fetchDevices().finally(() => {
      loading = null;
      if (reloadAgain) {
        reloadAgain = false;
        loadDevices();
      }
    });
    return loading;
  }

  async function fetchDevices() {
    let result;
    try {
      result = await api('GET', 'api/v1/devices');
    } catch (err) {
      notice(`The gateway does not answer (${err.message}).`);
      return 0;
    }
    if (result.status !== 200) {
      const { reason, message } = refusal(result);
      const text = `Cannot list the devices: ${reason}${message ? ` (${message})` : ''}.`;
      if (AUTH_FAILURES.has(result.status)) askForToken(`${text} Enter the API token.`);
      else notice(text);
      return result.status;
    }
    notice('');
    render(result.data.items);
    return 200;
  }

  let reloadTimer = 0;

  function scheduleReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadDevices, 250); // a reload of many files is one list request
  }

  // -- live events ----------------------------------------------------------------------------

  function connect() {
    clearTimeout(retry);
    if (source) source.close();
    const token = readToken();
    // EventSource cannot send headers: reads accept the token in the query (never writes).
    const url = `api/v1/events${token ? `?token=${encodeURIComponent(token)}` : ''}`;
    const stream = new EventSource(url);
    source = stream;
    setConnection('connecting', 'Connecting…');
    stream.addEventListener('open', () => {
      backoff = 1000;
      setConnection('live', 'Live');
      loadDevices(); // after the stream is open, so no update falls between the two
    });
    stream.addEventListener('twins', (event) => onTwins(JSON.parse(event.data)));
    stream.addEventListener('state', (event) => onState(JSON.parse(event.data)));
    stream.addEventListener('devices', scheduleReload);
    stream.addEventListener('error', () => {
      if (stream !== source) return;
      if (stream.readyState === EventSource.CLOSED) onClosed(stream);
      else setConnection('reconnecting', 'Reconnecting…'); // the browser retries by itself
    });
  }

  // The browser gave up (the gateway answered with an error). Ask the list why: a refused
  // token is not retried, or every retry would count as a failed authentication.
  async function onClosed(stream) {
    stream.close();
    setConnection('offline', 'Disconnected');
    const status = await loadDevices();
    if (stream !== source || AUTH_FAILURES.has(status)) return;
    retry = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 30000);
  }

  function setConnection(state, text) {
    const conn = $('conn');
    if (conn.dataset.state === state) return;
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function onTwins(message) {
    const device = devices.get(message.device);
    if (!device) return; // not listed yet: the 'devices' event brings it
    for (const [name, value] of Object.entries(message.values)) {
      const prop = device.props.get(name);
      if (prop) update(prop, value, message.timestamp, null);
    }
  }

  function onState(message) {
    const device = devices.get(message.device);
    if (device) setState(device, message.state);
  }

  // -- rendering ------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function notice(text) {
    const box = $('notice');
    box.textContent = text;
    box.hidden = !text;
  }

  function render(items) {
    const seen = new Set();
    items.forEach((item, index) => {
      seen.add(item.id);
      const device = upsert(item);
      // Move a card only when out of place: moving a node takes the focus out of its form.
      if (list.children[index] !== device.card) list.insertBefore(device.card, list.children[index] || null);
    });
    for (const [id, device] of devices) {
      if (!seen.has(id)) {
        device.card.remove();
        devices.delete(id);
      }
    }
    $('empty').hidden = items.length > 0;
  }

  function shapeOf(item) {
    return item.properties.map((p) => `${p.name}:${p.type}:${p.writable}:${p.minimum}:${p.maximum}`).join('|');
  }

  function upsert(item) {
    let device = devices.get(item.id);
    const shape = shapeOf(item);
    if (!device || device.shape !== shape) {
      const fresh = buildDevice(item, shape, device);
      if (device) device.card.replaceWith(fresh.card);
      device = fresh;
      devices.set(item.id, device);
    }
    setState(device, item.state);
    device.errorEl.textContent = item.last_error || '';
    device.errorEl.hidden = !item.last_error;
    for (const p of item.properties) {
      update(device.props.get(p.name), p.value, p.timestamp, p.error);
    }
    return device;
  }

  function setState(device, state) {
    device.stateEl.textContent = state;
    device.stateEl.dataset.state = state;
  }

  function buildDevice(item, shape, previous) {
    const n = ++serial;
    const card = el('section', { class: 'device', 'data-device': item.id, 'aria-labelledby': `d${n}` });
    const head = el('div', { class: 'device-head' });
    const title = el('h2', { id: `d${n}` }, item.name);
    const stateEl = el('span', { class: 'state', title: 'device state' });
    head.append(title, stateEl);
    const meta = el('p', { class: 'device-meta' }, `${item.namespace} · ${item.model} · ${item.protocol}`);
    const errorEl = el('p', { class: 'device-error' });
    const props = new Map();
    const ul = el('ul', { class: 'props' });
    item.properties.forEach((p, i) => {
      const old = previous && previous.props.get(p.name);
      const prop = buildProp(item.id, p, `d${n}-p${i}`, old ? old.history : []);
      props.set(p.name, prop);
      if (prop.spark && !(old && old.seeded)) seedLater(item.id, prop); // else kept its points
      ul.append(prop.row);
    });
    card.append(head, meta, errorEl, ul);
    return { card, stateEl, errorEl, props, shape };
  }

  function rangeText(p) {
    if (p.minimum != null && p.maximum != null) return `${p.minimum} to ${p.maximum}`;
    if (p.minimum != null) return `at least ${p.minimum}`;
    if (p.maximum != null) return `at most ${p.maximum}`;
    return '';
  }

  function buildProp(deviceId, p, id, history) {
    const row = el('li', { class: 'prop', 'data-prop': p.name });
    const head = el('div', { class: 'prop-head' });
    const info = [p.type, p.writable ? 'writable' : 'read-only', rangeText(p)].filter(Boolean);
    head.append(
      el('span', { class: 'prop-name' }, p.name),
      el('span', { class: 'prop-info' }, info.join(' · ')),
    );
    const reading = el('div', { class: 'reading' });
    const valueEl = el('span', { class: 'value' });
    reading.append(valueEl);
    if (p.unit) reading.append(el('span', { class: 'unit' }, p.unit));
    const timeEl = el('time', { class: 'when' });
    reading.append(timeEl);
    const errorEl = el('p', { class: 'prop-error', hidden: '' });
    row.append(head, reading, errorEl);
    const prop = {
      row, valueEl, timeEl, errorEl, name: p.name, history: history.slice(-HISTORY),
      numeric: NUMERIC.has(p.type), value: null, ts: null, error: null, spark: null,
      liveFrom: null, // time of the first point that came live, not from the history
      seeded: false, // its history was asked for (whatever the answer)
    };
    if (prop.numeric) {
      prop.spark = buildSpark();
      row.append(prop.spark.svg);
    }
    if (p.writable) row.append(buildWrite(deviceId, p, id));
    return prop;
  }

  // Apply a value from the list (with its read error) or from an event (error null).
  function update(prop, value, ts, error) {
    if (!prop) return;
    if (ts != null && prop.ts != null && ts <= prop.ts) {
      if (error !== prop.error && ts === prop.ts) {
        prop.error = error;
        markDirty(prop);
      }
      return; // not newer than what is shown (the list can be older than the stream)
    }
    if (ts != null) prop.ts = ts;
    prop.value = value;
    prop.error = error;
    const x = numberOf(value);
    if (prop.numeric && Number.isFinite(x)) {
      if (prop.liveFrom == null) prop.liveFrom = ts;
      prop.history.push(x);
      if (prop.history.length > HISTORY) prop.history.shift();
    }
    markDirty(prop);
  }

  function numberOf(value) {
    return typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  }

  // Paint once per frame however many events came in; a hidden tab paints nothing.
  function markDirty(prop) {
    dirty.add(prop);
    if (!frame) frame = requestAnimationFrame(paintAll);
  }

  function paintAll() {
    frame = 0;
    for (const prop of dirty) paint(prop);
    dirty.clear();
  }

  function paint(prop) {
    prop.valueEl.textContent = prop.value == null ? '—' : prop.value;
    if (prop.ts != null) {
      const when = new Date(prop.ts);
      prop.timeEl.dateTime = when.toISOString();
      prop.timeEl.textContent = when.toLocaleTimeString();
    }
    prop.errorEl.textContent = prop.error ? `Last read failed: ${prop.error}` : '';
    prop.errorEl.hidden = !prop.error;
    if (prop.spark) drawSpark(prop);
  }

  // -- sparklines -----------------------------------------------------------------------------

  function buildSpark() {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 100 20');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const line = document.createElementNS(SVG_NS, 'polyline');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
    return { svg, line };
  }

  // The history request runs after the render that built the sparkline, a few at a time.
  function seedLater(deviceId, prop) {
    seedQueue.push([deviceId, prop]);
    if (seedQueue.length === 1) queueMicrotask(pumpSeeds);
  }

  function pumpSeeds() {
    while (seeding < SEEDS_AT_ONCE && seedQueue.length > 0) {
      const [deviceId, prop] = seedQueue.shift();
      const device = devices.get(deviceId);
      if (!device || device.props.get(prop.name) !== prop) continue; // gone or rebuilt since
      seeding += 1;
      seed(deviceId, prop).finally(() => {
        prop.seeded = true;
        seeding -= 1;
        pumpSeeds();
      });
    }
  }

  // Older points go in front of those that came live meanwhile. Any refusal (the local store
  // is off: 409, a missing token, an older gateway: 404) leaves the sparkline to fill live.
  async function seed(deviceId, prop) {
    let result;
    try {
      result = await api('GET', `${propertyPath(deviceId, prop.name)}/history?limit=${HISTORY}`);
    } catch {
      return;
    }
    if (result.status !== 200 || !result.data || !Array.isArray(result.data.samples)) return;
    const older = [];
    for (const sample of result.data.samples) {
      if (prop.liveFrom != null && sample.timestamp >= prop.liveFrom) break; // oldest first
      const x = numberOf(sample.value);
      if (Number.isFinite(x)) older.push(x);
    }
    if (older.length === 0) return;
    prop.history = older.concat(prop.history).slice(-HISTORY);
    markDirty(prop);
  }

  function drawSpark(prop) {
    const points = prop.history;
    const { svg, line } = prop.spark;
    if (points.length === 0) {
      line.setAttribute('points', '');
      svg.setAttribute('aria-label', `${prop.name}: no numeric values yet`);
      return;
    }
    let lo = points[0];
    let hi = points[0];
    for (const v of points) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const step = 100 / (HISTORY - 1);
    const right = 100 - (points.length - 1) * step; // the newest point is always at the right
    const coords = points.map((v, i) => {
      const y = hi === lo ? 10 : 18 - ((v - lo) / (hi - lo)) * 16;
      return `${(right + i * step).toFixed(2)},${y.toFixed(2)}`;
    });
    line.setAttribute('points', coords.join(' '));
    svg.setAttribute('aria-label', `${prop.name}, last ${points.length} values: from ${lo} to ${hi}`);
  }

  // -- writes ---------------------------------------------------------------------------------

  function buildWrite(deviceId, p, id) {
    // novalidate: the gateway checks types and ranges, and its reason is what the user sees.
    const form = el('form', { class: 'write', novalidate: '' });
    const label = el('label', { for: `${id}-in` }, 'New value');
    label.append(el('span', { class: 'visually-hidden' }, ` for ${p.name}`));
    const result = el('p', { class: 'result', id: `${id}-r`, role: 'status', 'aria-live': 'polite' });
    let input;
    if (p.type === 'BOOLEAN') {
      input = el('select', { id: `${id}-in`, name: 'value' });
      input.append(new Option('true'), new Option('false'));
    } else {
      input = el('input', {
        id: `${id}-in`, name: 'value', type: 'text', autocomplete: 'off', spellcheck: 'false',
        placeholder: rangeText(p) || p.type.toLowerCase(),
      });
    }
    input.setAttribute('aria-describedby', result.id);
    const button = el('button', { type: 'submit' }, 'Write');
    const row = el('div', { class: 'row' });
    row.append(input, button);
    form.append(label, row, result);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      write(deviceId, p.name, input, button, result);
    });
    return form;
  }

  function showResult(result, kind, text) {
    result.dataset.kind = kind;
    result.textContent = text;
  }

  async function write(deviceId, name, input, button, result) {
    const value = input.value.trim();
    if (value === '') {
      showResult(result, 'error', 'Type a value first.');
      input.focus();
      return;
    }
    const path = propertyPath(deviceId, name);
    button.disabled = true;
    showResult(result, 'busy', `Writing ${value}…`);
    try {
      const answer = await api('PUT', path, { value });
      if (answer.status === 200) {
        showResult(result, 'ok', `Applied: ${value}`);
      } else if (answer.status === 202) {
        showResult(result, 'pending', `Queued: ${(answer.data && answer.data.message) || 'the device has not answered yet'}`);
      } else {
        const { reason, message } = refusal(answer);
        showResult(result, 'error', `Refused: ${reason}${message ? ` (${message})` : ''}`);
        if (AUTH_FAILURES.has(answer.status)) askForToken('Writes need the API token: enter it above.');
      }
    } catch (err) {
      showResult(result, 'error', `Not sent: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // -- start ----------------------------------------------------------------------------------

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('token');
    storeToken(input.value.trim());
    input.value = '';
    $('auth').open = false;
    notice('');
    connect();
  });
  $('token-forget').addEventListener('click', () => {
    storeToken('');
    connect();
  });

  takeTokenFromUrl();
  connect();
})();
