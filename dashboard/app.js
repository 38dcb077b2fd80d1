// The dashboard: a page of the daemon, talking to it over its own HTTP routes.
// Every task is held here once (10,000 fit easily) and kept current by /events;
// the table draws only the rows in view.

const STATES = ['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'];
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELED']);
const ROW_HEIGHT = 32;
const PAGE = 10_000;
const STATS_EVERY_MS = 2_000;
const HISTORY = 150; // five minutes of samples
const MIN_SLOTS = 30; // a minute
const OUTPUT_SHOWN_CHARS = 200_000;
const RETRY_MS = 2_000;

const $ = (id) => document.getElementById(id);

/** id -> record; `order` holds the ids newest first. */
const tasks = new Map();
/** id -> created_at of the tasks removed from this page */
const removed = new Map();
let order = [];
let selected;
let follower;
let events;

class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error?.code;
  }
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || answer.ok === false) throw new ApiError(response.status, answer.error);
  return answer;
}

// ---- tasks --------------------------------------------------------------

function put(record) {
  // A removed task's last changes may still be on their way; a new task under its id has a later creation.
  if (removed.get(record.id) === record.created_at) return;
  const before = tasks.get(record.id);
  if (!before) order.unshift(record.id);
  tasks.set(record.id, record);
  if (record.id === selected) {
    // Restarted while shown: follow the new run's output.
    if (before && TERMINAL.has(before.state) && !TERMINAL.has(record.state)) select(record.id);
    else showDetail();
  }
  schedule();
}

/** `createdAt`: of the task removed, when told by the daemon (the page may not hold it yet while its list loads). */
function forget(id, createdAt = tasks.get(id)?.created_at) {
  if (createdAt !== undefined) removed.set(id, createdAt);
  tasks.delete(id);
  order = order.filter((other) => other !== id);
  if (selected === id) select(undefined);
  schedule();
}

async function loadAll() {
  const touched = new Set();
  const note = (record) => touched.add(record.id);
  onTask.add(note);
  try {
    const loaded = [];
    let after;
    for (;;) {
      const query = new URLSearchParams({ limit: String(PAGE), ...(after ? { after } : {}) });
      const { tasks: page } = await api('GET', `/tasks?${query}`);
      loaded.push(...page);
      if (page.length < PAGE) break;
      after = page.at(-1).id;
    }
    // The list is the truth (tasks removed elsewhere or dropped by retention leave), except for
    // changes that arrived while it was read, which are newer.
    const fresh = new Map();
    for (const record of loaded) {
      if (removed.get(record.id) !== record.created_at) fresh.set(record.id, touched.has(record.id) ? tasks.get(record.id) : record);
    }
    const newer = [...touched].filter((id) => !fresh.has(id) && tasks.has(id));
    for (const id of newer) fresh.set(id, tasks.get(id));
    tasks.clear();
    for (const [id, record] of fresh) tasks.set(id, record);
    order = [...newer.reverse(), ...loaded.map((record) => record.id).filter((id) => tasks.has(id)).reverse()];
    if (selected !== undefined && !tasks.has(selected)) select(undefined);
    schedule();
  } finally {
    onTask.delete(note);
  }
}

const onTask = new Set();

function listen() {
  events?.close();
  events = new EventSource('/events');
  events.addEventListener('open', () => {
    setConnection('live');
    loadAll().catch(showFailure);
  });
  events.addEventListener('error', () => {
    setConnection('lost');
    // The browser retries by itself, unless the daemon answered with an error (a token changed,
    // a session expired): then ask whether this page may still look, and start again.
    if (events.readyState === EventSource.CLOSED) setTimeout(() => recheck(), RETRY_MS);
  });
  events.addEventListener('task', (event) => {
    const record = JSON.parse(event.data);
    for (const note of onTask) note(record);
    put(record);
  });
  // Removed by another page or client: it leaves this one too.
  events.addEventListener('removed', (event) => {
    const { id, created_at } = JSON.parse(event.data);
    forget(id, created_at);
  });
}

async function recheck() {
  try {
    await api('GET', '/count');
    listen();
  } catch (error) {
    if (error.status === 401) showFailure(error);
    else setTimeout(() => recheck(), RETRY_MS);
  }
}

function setConnection(state) {
  const badge = $('connection');
  badge.dataset.state = state;
  badge.textContent = state === 'live' ? 'live' : state === 'lost' ? 'reconnecting' : 'connecting';
}

// ---- drawing ------------------------------------------------------------

let drawing = false;
function schedule() {
  if (drawing) return;
  drawing = true;
  requestAnimationFrame(() => {
    drawing = false;
    draw();
  });
}

function visibleIds() {
  const state = $('filter').value;
  const text = $('search').value.trim().toLowerCase();
  return order.filter((id) => {
    const task = tasks.get(id);
    if (!task || (state && task.state !== state)) return false;
    return !text || id.toLowerCase().includes(text) || commandText(task).toLowerCase().includes(text);
  });
}

function draw() {
  drawCounts();
  const ids = visibleIds();
  $('shown').textContent = `${ids.length.toLocaleString()} of ${tasks.size.toLocaleString()}`;
  const box = $('rows');
  $('spacer').style.height = `${ids.length * ROW_HEIGHT}px`;
  const first = Math.floor(box.scrollTop / ROW_HEIGHT);
  const count = Math.ceil(box.clientHeight / ROW_HEIGHT) + 2;
  const rows = [...box.querySelectorAll('.row')];
  for (let i = 0; i < count; i++) {
    const id = ids[first + i];
    let row = rows[i];
    if (!row) {
      row = document.createElement('div');
      row.className = 'row';
      row.innerHTML = '<span class="mono"></span><span><span class="state"></span></span><span class="mono"></span><span class="num"></span><span class="num"></span><span class="muted"></span><span class="muted"></span><span class="muted"></span>';
      row.addEventListener('click', () => select(row.dataset.id));
      box.append(row);
    }
    row.hidden = id === undefined;
    if (id !== undefined) fillRow(row, tasks.get(id), first + i);
  }
  for (const extra of rows.slice(count)) extra.remove();
}

function fillRow(row, task, index) {
  const [id, state, command, attempts, duration, created, started, finished] = row.children;
  row.dataset.id = task.id;
  row.style.top = `${index * ROW_HEIGHT}px`;
  row.setAttribute('aria-selected', String(task.id === selected));
  id.textContent = task.id;
  id.title = task.id;
  state.dataset.state = task.state;
  state.firstChild.textContent = task.state;
  command.textContent = commandText(task);
  command.title = commandText(task);
  attempts.textContent = `${task.attempts}/${task.max_attempts}`;
  duration.textContent = durationText(task);
  created.textContent = timeText(task.created_at);
  started.textContent = timeText(task.started_at);
  finished.textContent = timeText(task.finished_at);
}

function drawCounts() {
  const box = $('counts');
  if (box.children.length === 0) {
    for (const state of STATES) {
      // A link that filters, not a button: the page's buttons are its actions (a "0 CANCELED" button
      // would also answer to the name of the Cancel button).
      const card = document.createElement('a');
      card.href = '#';
      card.className = 'count';
      card.dataset.state = state;
      card.innerHTML = `<b>0</b><span>${state}</span>`;
      card.addEventListener('click', (event) => {
        event.preventDefault();
        $('filter').value = $('filter').value === state ? '' : state;
        schedule();
      });
      box.append(card);
    }
  }
  const counts = Object.fromEntries(STATES.map((state) => [state, 0]));
  for (const task of tasks.values()) counts[task.state]++;
  for (const card of box.children) {
    card.firstChild.textContent = counts[card.dataset.state].toLocaleString();
    card.setAttribute('aria-current', String($('filter').value === card.dataset.state));
  }
}

const commandText = (task) => (Array.isArray(task.cmd) ? task.cmd.join(' ') : (task.cmd ?? (task.script ? `${task.script.lang} script` : '')));

function durationText(task) {
  const ms = task.state === 'RUNNING' && task.started_at ? Date.now() - Date.parse(task.started_at) : task.duration_ms;
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} m ${Math.round((ms % 60_000) / 1000)} s`;
}

function timeText(iso) {
  if (!iso) return '—';
  const at = new Date(iso);
  const today = at.toDateString() === new Date().toDateString();
  return today ? at.toLocaleTimeString() : at.toLocaleString();
}

// ---- one task -----------------------------------------------------------

function select(id) {
  selected = id;
  follower?.close();
  follower = undefined;
  $('detail').hidden = id === undefined;
  $('detail-error').textContent = '';
  schedule();
  if (id === undefined) return;
  $('stdout').textContent = '';
  $('stderr').textContent = '';
  showDetail();
  showOutput(id);
}

function showDetail() {
  const task = tasks.get(selected);
  if (!task) return;
  $('detail-id').textContent = task.id;
  const fields = [
    ['state', task.state],
    ['command', commandText(task)],
    ['exit code', task.exit_code ?? '—'],
    ['error', task.error ? `${task.error.code}: ${task.error.message}` : '—'],
    ['attempts', `${task.attempts} of ${task.max_attempts}`],
    ['priority', task.priority ?? 0],
    ['depends on', task.depends_on?.join(', ') || '—'],
    ['duration', durationText(task)],
    ['created', timeText(task.created_at)],
    ['started', timeText(task.started_at)],
    ['finished', timeText(task.finished_at)],
  ];
  const list = $('detail-fields');
  list.replaceChildren(
    ...fields.flatMap(([name, value]) => {
      const term = document.createElement('dt');
      term.textContent = name;
      const detail = document.createElement('dd');
      detail.textContent = String(value);
      if (name === 'state') detail.innerHTML = `<span class="state" data-state="${task.state}">${task.state}</span>`;
      return [term, detail];
    }),
  );
  $('cancel').disabled = TERMINAL.has(task.state);
  $('restart').disabled = !TERMINAL.has(task.state);
}

function appendOutput(stream, text) {
  const box = $(stream);
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const all = box.textContent + text;
  box.textContent = all.length > OUTPUT_SHOWN_CHARS ? all.slice(-OUTPUT_SHOWN_CHARS) : all;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

async function showOutput(id) {
  const task = tasks.get(id);
  if (task && TERMINAL.has(task.state)) {
    try {
      const output = await api('GET', `/tasks/${encodeURIComponent(id)}/output`);
      if (selected !== id) return;
      appendOutput('stdout', output.stdout);
      appendOutput('stderr', output.stderr);
    } catch (error) {
      $('detail-error').textContent = error.message;
    }
    return;
  }
  // Live: what it wrote so far, then as it writes, then its final record.
  follower = new EventSource(`/tasks/${encodeURIComponent(id)}/output?follow=1`);
  follower.addEventListener('output', (event) => {
    const { stream, data } = JSON.parse(event.data);
    appendOutput(stream, data);
  });
  follower.addEventListener('task', (event) => {
    put(JSON.parse(event.data));
    follower.close();
  });
  follower.addEventListener('error', () => {
    // Cut off (the daemon restarted, or this page was too slow): start again from the top.
    follower?.close();
    follower = undefined;
    if (selected === id) setTimeout(() => selected === id && !follower && select(id), RETRY_MS);
  });
}

async function act(method, path, done) {
  $('detail-error').textContent = '';
  try {
    done(await api(method, path));
  } catch (error) {
    $('detail-error').textContent = error.message;
  }
}

// ---- machine charts -----------------------------------------------------

const history = { cpu: [], memory: [], disk: [], gpu: [] };

function chart(name, value, label) {
  const points = history[name];
  points.push(value);
  if (points.length > HISTORY) points.shift();
  $(`${name}-now`).textContent = label;
  const svg = $(`${name}-chart`);
  // The newest sample at the right edge; until a minute has passed, the samples so far fill the width.
  const slots = Math.max(points.length, MIN_SLOTS);
  const x = (i) => ((slots - points.length + i) / (slots - 1)) * 300;
  const xy = points.map((v, i) => `${x(i)},${80 - (Math.max(0, Math.min(v ?? 0, 100)) / 100) * 78}`);
  const start = `${x(0)},80`;
  const end = `${x(points.length - 1)},80`;
  svg.innerHTML = points.length < 2 ? '' : `<polygon points="${start} ${xy.join(' ')} ${end}"></polygon><polyline points="${xy.join(' ')}"></polyline>`;
}

const percent = (used, total) => (total > 0 ? (used / total) * 100 : 0);
const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

async function sampleStats() {
  try {
    const stats = await api('GET', '/stats');
    chart('cpu', stats.cpu.use_percent, `${stats.cpu.use_percent.toFixed(0)} % of ${stats.cpu.cores}`);
    const usedMemory = stats.memory.total_bytes - stats.memory.free_bytes;
    chart('memory', percent(usedMemory, stats.memory.total_bytes), `${gib(usedMemory)} of ${gib(stats.memory.total_bytes)}`);
    const usedDisk = stats.disk.total_bytes - stats.disk.free_bytes;
    chart('disk', percent(usedDisk, stats.disk.total_bytes), `${gib(usedDisk)} of ${gib(stats.disk.total_bytes)}`);
    const gpus = stats.gpu ?? [];
    const known = gpus.filter((gpu) => gpu.utilization_percent !== null); // some GPUs report no use
    const use = known.length ? known.reduce((sum, gpu) => sum + gpu.utilization_percent, 0) / known.length : undefined;
    const label = use === undefined ? 'no figure' : `${use.toFixed(0)} %`;
    chart('gpu', use, gpus.length ? `${label} of ${gpus.length}` : 'none');
  } catch {
    // The connection badge tells of a lost daemon; the charts just pause.
  }
}

// ---- forms and start ----------------------------------------------------

function specOf(form) {
  const data = new FormData(form);
  const spec = { cmd: data.get('cmd') };
  for (const name of ['timeout_ms', 'priority', 'retries', 'delay_ms']) {
    // What the browser cannot read as a number ("5e") reads as empty: said, not left out.
    if (form.elements.namedItem(name).validity.badInput) throw new Error(`${name} must be a number`);
    const value = data.get(name);
    if (value !== '' && value !== null) spec[name] = Number(value);
  }
  const id = data.get('id')?.trim();
  if (id) spec.id = id;
  const dependencies = data.get('depends_on')?.split(/[\s,]+/).filter(Boolean) ?? [];
  if (dependencies.length) spec.depends_on = dependencies;
  return spec;
}

function showFailure(error) {
  if (error.status === 401) {
    $('main').hidden = true;
    $('login').hidden = false;
    $('token').focus();
  } else {
    $('submit-error').textContent = error.message;
  }
}

async function start() {
  try {
    const health = await api('GET', '/health');
    $('version').textContent = `v${health.version}`;
    await api('GET', '/count'); // tells whether this browser may see more
  } catch (error) {
    return showFailure(error);
  }
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = false;
  listen();
  sampleStats();
  setInterval(sampleStats, STATS_EVERY_MS);
  // Running tasks' durations move on their own.
  setInterval(() => {
    if (order.some((id) => tasks.get(id)?.state === 'RUNNING')) schedule();
  }, 1000);
}

$('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    await api('POST', '/login', { token: $('token').value });
    $('token').value = '';
    $('login-error').textContent = '';
    start();
  } catch (error) {
    $('login-error').textContent = error.message;
  }
});

$('logout').addEventListener('click', async () => {
  await api('POST', '/logout').catch(() => undefined);
  location.reload();
});

// The daemon checks the fields (the form does not: its messages name the field and what was wrong).
$('submit').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  $('submit-result').textContent = '';
  $('submit-error').textContent = '';
  try {
    const { task, duplicate } = await api('POST', '/tasks', specOf(form));
    $('submit-result').textContent = duplicate ? `${task.id} was submitted already, with the same spec` : `Submitted ${task.id}`;
    form.elements.namedItem('id').value = ''; // an id is taken once
    // The events may already have told of a later state than this answer holds.
    if (!tasks.has(task.id)) put(task);
    select(task.id);
  } catch (error) {
    $('submit-error').textContent = error.message;
  }
});

// The change comes back through the events, in order with every other; the answer says only that it was done.
$('cancel').addEventListener('click', () => act('POST', `/tasks/${encodeURIComponent(selected)}/cancel`, () => undefined));
$('restart').addEventListener('click', () => act('POST', `/tasks/${encodeURIComponent(selected)}/restart`, () => undefined));
// No dialog: a task not finished is canceled first, as the button's title says.
$('remove').addEventListener('click', () => {
  const id = selected;
  act('DELETE', `/tasks/${encodeURIComponent(id)}`, () => forget(id));
});
$('filter').addEventListener('change', schedule);
$('search').addEventListener('input', schedule);
$('rows').addEventListener('scroll', schedule, { passive: true });
window.addEventListener('resize', schedule);

start();
