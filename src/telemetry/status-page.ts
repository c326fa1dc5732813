/**
 * The status page served at `GET /`: one self-contained HTML document (inline CSS and JS, no CDN,
 * no build step) that polls /api/status every 2 s and drives the admin API.
 *
 * The inline style and script are allowed by their SHA-256 in the Content-Security-Policy, so the
 * page needs no 'unsafe-inline' and nothing else can run in it. Data is only ever put in the DOM as
 * text (textContent), never as HTML.
 */
import { createHash } from 'node:crypto';

const STYLE = `
/* The balancer cannot be reached: what is shown is the last answer, ages included, frozen. */
.stale main { opacity: .5; }
:root { --fg:#1f2328; --muted:#59636e; --bg:#fff; --card:#f6f8fa; --line:#d1d9e0;
  --up:#1a7f37; --down:#cf222e; --amber:#9a6700; --grey:#6e7781; --blue:#0969da; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e6edf3; --muted:#9198a1; --bg:#0d1117; --card:#161b22; --line:#30363d;
    --up:#3fb950; --down:#f85149; --amber:#d29922; --grey:#8b949e; --blue:#4493f8; }
}
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:.4rem 1rem; padding:.8rem 1rem; border-bottom:1px solid var(--line); }
header h1 { font-size:1.2rem; margin:0; }
main { padding:0 1rem 2rem; max-width:80rem; }
h2 { font-size:1rem; margin:1.4rem 0 .5rem; }
h2 small { color:var(--muted); font-weight:normal; }
.muted { color:var(--muted); }
#conn.bad { color:var(--down); font-weight:600; }
#msg { min-height:1.4em; margin:.6rem 0 0; }
#msg:empty { min-height:0; margin:0; }
#msg.error { color:var(--down); }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:.35rem .6rem; border-bottom:1px solid var(--line); vertical-align:middle; }
th { font-weight:600; color:var(--muted); background:var(--card); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.pill { display:inline-block; min-width:4.2em; padding:.05rem .5rem; border-radius:1rem; color:#fff;
  font-weight:600; font-size:.85em; text-align:center; }
.state-up, .role-master { background:var(--up); }
.state-down, .role-fault { background:var(--down); }
.state-drain, .state-maint { background:var(--amber); }
.state-unknown, .role-init { background:var(--grey); }
.role-backup { background:var(--blue); }
.role-off { background:var(--grey); }
[hidden] { display:none !important; }
.ready-ok { background:var(--up); }
.ready-bad { background:var(--down); }
.check-ok { color:var(--up); }
.check-bad { color:var(--down); }
.actions { white-space:nowrap; }
button { font:inherit; padding:.25rem .6rem; margin:0 .2rem .2rem 0; border:1px solid var(--line); border-radius:.4rem;
  background:var(--card); color:var(--fg); cursor:pointer; min-height:2rem; }
button:disabled { opacity:.45; cursor:default; }
button:not(:disabled):hover { border-color:var(--blue); }
@media (max-width: 640px) {
  main { padding:0 .6rem 2rem; }
  table, thead, tbody, tr, th, td { display:block; }
  thead { display:none; }
  tr { border:1px solid var(--line); border-radius:.5rem; margin:.6rem 0; padding:.3rem .2rem; background:var(--card); }
  td { border:none; padding:.2rem .6rem; display:flex; justify-content:space-between; gap:1rem; text-align:right; }
  td.num { text-align:right; }
  td::before { content:attr(data-label); color:var(--muted); font-weight:600; text-align:left; }
  button { min-height:2.4rem; padding:.3rem .9rem; }
}
`;

const SCRIPT = `
(function () {
  'use strict';
  var REFRESH_MS = 2000;
  var FETCH_TIMEOUT_MS = 5000;
  var TOKEN_KEY = 'mqtt-lb-admin-token';
  var tokenRequired = document.documentElement.getAttribute('data-auth') === 'token';
  var lastOk = 0;
  var timer = null;

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function cell(label, cls) { var td = el('td', cls); td.setAttribute('data-label', label); return td; }
  function setText(e, text) { text = String(text); if (e.textContent !== text) e.textContent = text; }
  function setClass(e, cls) { if (e.className !== cls) e.className = cls; }

  function fmtDuration(sec) {
    sec = Math.max(0, Math.floor(sec));
    var d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }
  function fmtAge(ms) {
    if (ms < 1000) return ms + ' ms ago';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s ago';
    return fmtDuration(ms / 1000) + ' ago';
  }

  /** Keyed update of a tbody: rows are kept (and so are buttons under the pointer) across refreshes. */
  function reconcile(tbody, items, keyOf, create, update) {
    var existing = Object.create(null); // keyed by names: "constructor" or "toString" must not hit Object.prototype
    Array.prototype.forEach.call(tbody.children, function (tr) { existing[tr.getAttribute('data-key')] = tr; });
    var prev = null;
    items.forEach(function (item) {
      var key = keyOf(item);
      var tr = existing[key];
      if (tr) delete existing[key]; else { tr = create(item); tr.setAttribute('data-key', key); }
      update(tr, item);
      var want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    });
    Object.keys(existing).forEach(function (k) { existing[k].remove(); });
  }

  function table(headers) {
    var t = el('table'), thead = el('thead'), tr = el('tr');
    headers.forEach(function (h) { tr.appendChild(el('th', h[1] || '', h[0])); });
    thead.appendChild(tr); t.appendChild(thead); t.appendChild(el('tbody'));
    return t;
  }

  function renderHeader(s) {
    setText(byId('version'), 'v' + s.version);
    setText(byId('uptime'), 'up ' + fmtDuration(s.uptimeSeconds));
    var role = byId('role');
    if (!s.failover.enabled) { setText(role, 'standalone'); setClass(role, 'pill role-off'); return; }
    var states = s.failover.instances.map(function (i) { return i.state; });
    var first = states[0] || 'init';
    var same = states.every(function (x) { return x === first; });
    setText(role, same ? first : states.join(' / '));
    setClass(role, 'pill role-' + (same ? first : 'init'));
  }

  function renderReady(ok, reason) {
    var r = byId('ready');
    r.hidden = false;
    setText(r, ok ? 'ready' : 'not ready');
    setClass(r, 'pill ' + (ok ? 'ready-ok' : 'ready-bad'));
    r.title = ok ? '/readyz: ready' : '/readyz: ' + reason;
    setText(byId('unready'), ok ? '' : reason);
  }

  function renderFailover(s) {
    var sec = byId('failover');
    sec.hidden = !s.failover.enabled;
    if (!s.failover.enabled) return;
    reconcile(sec.querySelector('tbody'), s.failover.instances, function (i) { return String(i.routerId); },
      function () {
        var tr = el('tr');
        ['router id', 'state', 'priority', 'VIPs', 'peer', 'peer state', 'last advert'].forEach(function (l, n) {
          var td = cell(l, n === 0 || n === 2 ? 'num' : '');
          if (n === 1 || n === 5) td.appendChild(el('span', 'pill'));
          tr.appendChild(td);
        });
        return tr;
      },
      function (tr, i) {
        var c = tr.children;
        setText(c[0], i.routerId);
        setText(c[1].firstChild, i.state); setClass(c[1].firstChild, 'pill role-' + i.state);
        setText(c[2], i.priority);
        setText(c[3], i.vips.join(', '));
        setText(c[4], i.peer ? i.peer.address : 'none seen');
        var ps = i.peer ? i.peer.state : 'unknown';
        setText(c[5].firstChild, ps); setClass(c[5].firstChild, 'pill role-' + (ps === 'unknown' ? 'init' : ps));
        setText(c[6], i.peer ? fmtAge(i.peer.lastAdvertAgeMs) : '-');
      });
  }

  function renderListeners(s) {
    reconcile(byId('listeners').querySelector('tbody'), s.listeners, function (l) { return l.name; },
      function () {
        var tr = el('tr');
        [['listener', ''], ['bind', ''], ['TLS', ''], ['sessions', 'num']].forEach(function (h) { tr.appendChild(cell(h[0], h[1])); });
        return tr;
      },
      function (tr, l) {
        var c = tr.children;
        setText(c[0], l.name); setText(c[1], l.bind); setText(c[2], l.tls ? 'yes' : 'no'); setText(c[3], l.sessions);
      });
  }

  function poolSection(p) {
    var sec = el('section', 'pool');
    var h = el('h2'); h.appendChild(document.createTextNode('pool ')); h.appendChild(el('span', 'pool-name'));
    h.appendChild(document.createTextNode(' ')); h.appendChild(el('small'));
    sec.appendChild(h);
    sec.appendChild(table([['server'], ['address'], ['state'], ['admin'], ['weight', 'num'], ['sessions', 'num'], ['last check'], ['actions']]));
    return sec;
  }

  function serverRow(pool) {
    return function (srv) {
      var tr = el('tr');
      tr.setAttribute('data-server', pool + '/' + srv.name);
      var labels = ['server', 'address', 'state', 'admin', 'weight', 'sessions', 'last check', 'actions'];
      labels.forEach(function (l, n) {
        var td = cell(l, n === 4 || n === 5 ? 'num' : n === 7 ? 'actions' : '');
        td.setAttribute('data-field', l.replace(' ', '-'));
        if (n === 2) td.appendChild(el('span', 'pill'));
        if (n === 7) {
          ['drain', 'maint', 'ready'].forEach(function (a) {
            var b = el('button', '', a);
            b.type = 'button';
            b.setAttribute('data-action', a);
            b.addEventListener('click', function () { act(pool, srv.name, a, b); });
            td.appendChild(b);
          });
        }
        tr.appendChild(td);
      });
      return tr;
    };
  }

  function updateServer(tr, srv) {
    var c = tr.children;
    setText(c[0], srv.name + (srv.backup ? ' (backup)' : ''));
    setText(c[1], srv.address);
    setText(c[2].firstChild, srv.state); setClass(c[2].firstChild, 'pill state-' + srv.state);
    setText(c[3], srv.admin);
    setText(c[4], srv.weight);
    setText(c[5], srv.sessions);
    var lc = srv.lastCheck;
    setText(c[6], lc ? lc.result + ' (' + lc.durationMs + ' ms) ' + fmtAge(lc.ageMs) : 'never');
    setClass(c[6], lc ? (lc.result === 'ok' ? 'check-ok' : 'check-bad') : 'muted');
    Array.prototype.forEach.call(c[7].querySelectorAll('button'), function (b) {
      if (!b.hasAttribute('data-busy')) b.disabled = b.getAttribute('data-action') === srv.admin;
    });
  }

  function renderPools(s) {
    var root = byId('pools');
    var existing = Object.create(null); // keyed by names: "constructor" or "toString" must not hit Object.prototype
    Array.prototype.forEach.call(root.children, function (sec) { existing[sec.getAttribute('data-pool')] = sec; });
    s.pools.forEach(function (p) {
      var sec = existing[p.name];
      if (sec) delete existing[p.name]; else { sec = poolSection(p); sec.setAttribute('data-pool', p.name); }
      root.appendChild(sec); // keeps the API's order; appendChild of a present child moves it
      setText(sec.querySelector('.pool-name'), p.name);
      var up = p.servers.filter(function (x) { return x.state === 'up'; }).length;
      setText(sec.querySelector('small'), p.balance + ' · ' + up + '/' + p.servers.length + ' up');
      reconcile(sec.querySelector('tbody'), p.servers, function (x) { return x.name; }, serverRow(p.name), updateServer);
    });
    Object.keys(existing).forEach(function (k) { existing[k].remove(); });
  }

  function setConn(ok, detail) {
    var c = byId('conn');
    document.documentElement.classList.toggle('stale', !ok);
    if (ok) { lastOk = Date.now(); setText(c, 'updated ' + new Date(lastOk).toLocaleTimeString()); setClass(c, 'muted'); }
    else { setText(c, 'cannot reach mqtt-lb (' + detail + ')' + (lastOk ? ', data from ' + new Date(lastOk).toLocaleTimeString() : '')); setClass(c, 'bad'); }
  }

  function message(text, isError) {
    var m = byId('msg');
    setText(m, text);
    setClass(m, isError ? 'error' : 'muted');
  }

  function schedule(ms) {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  function refresh() {
    timer = null;
    var ctrl = new AbortController();
    var t = setTimeout(function () { ctrl.abort(); }, FETCH_TIMEOUT_MS);
    fetch('api/status', { cache: 'no-store', signal: ctrl.signal })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (s) {
        renderHeader(s); renderFailover(s); renderListeners(s); renderPools(s);
        setConn(true);
        // /api/status keeps the contract's shape; whether this instance takes clients (stopping, starting, a pool
        // without servers) is /readyz's to say, as the outer load balancer sees it.
        return fetch('api/ready', { cache: 'no-store', signal: ctrl.signal })
          .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
          .then(function (r) { renderReady(r.ready === true, String(r.reason || '')); });
      })
      .catch(function (e) {
        setConn(false, e && e.name === 'AbortError' ? 'timeout' : (e && e.message) || 'error');
        // Unknown now: no stale "ready" beside an unreachable balancer.
        byId('ready').hidden = true; setText(byId('unready'), '');
      })
      .then(function () { clearTimeout(t); if (timer === null) schedule(REFRESH_MS); });
  }

  function storedToken() { try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; } }
  function askToken() {
    var t = window.prompt('Admin token (admin.token in lb.yaml) for ' + location.host);
    if (!t) return null;
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* storage disabled: ask again next time */ }
    return t;
  }
  function forgetToken() { try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ } }

  function post(url, token) {
    var headers = {};
    if (token) headers.authorization = 'Bearer ' + token;
    return fetch(url, { method: 'POST', headers: headers, cache: 'no-store' });
  }

  function act(pool, server, action, button) {
    var token = storedToken();
    // Known to need a token: ask before the first call rather than collect a 401 first.
    if (tokenRequired && !token) { token = askToken(); if (!token) { message('no token given, nothing changed', true); return; } }
    var url = 'api/servers/' + encodeURIComponent(pool) + '/' + encodeURIComponent(server) + '/' + action;
    button.setAttribute('data-busy', '1'); button.disabled = true;
    post(url, token)
      .then(function (r) {
        if (r.status !== 401) return r;
        // Wrong or missing token: forget it and ask once.
        forgetToken();
        var again = askToken();
        if (!again) return r;
        // Refused too: not kept, or the next action would send it first.
        return post(url, again).then(function (r2) { if (r2.status === 401) forgetToken(); return r2; });
      })
      .then(function (r) {
        if (r.ok) { message(pool + '/' + server + ': ' + action, false); return; }
        return r.text().then(function (t) { message(action + ' ' + pool + '/' + server + ' failed: HTTP ' + r.status + ' ' + t.trim(), true); });
      })
      .catch(function (e) { message(action + ' ' + pool + '/' + server + ' failed: ' + ((e && e.message) || 'error'), true); })
      .then(function () { button.removeAttribute('data-busy'); button.disabled = false; schedule(0); });
  }

  refresh();
})();
`;

function sha256Base64(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('base64');
}

export interface StatusPage {
  html: string;
  /** Content-Security-Policy allowing exactly the page's own inline style and script. */
  csp: string;
}

/**
 * @param tokenRequired the admin API needs a bearer token: the page asks for it before the first
 *   action (it still asks again whenever the API answers 401).
 */
export function renderStatusPage(opts: { tokenRequired: boolean }): StatusPage {
  const html = `<!doctype html>
<html lang="en" data-auth="${opts.tokenRequired ? 'token' : 'none'}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mqtt-lb status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>mqtt-lb</h1>
  <span id="version" class="muted"></span>
  <span id="role" class="pill role-init">…</span>
  <span id="uptime"></span>
  <span id="ready" class="pill" hidden></span>
  <span id="conn" class="muted">loading…</span>
  <span id="unready" class="muted"></span>
</header>
<main>
  <noscript><p>This page needs JavaScript. The same status is JSON at <a href="api/status">/api/status</a> (and <code>mqtt-lb status</code> prints it); metrics at <a href="metrics">/metrics</a>.</p></noscript>
  <p id="msg" role="status" aria-live="polite"></p>
  <section id="failover" hidden>
    <h2>failover</h2>
    <table><thead><tr><th class="num">router id</th><th>state</th><th class="num">priority</th><th>VIPs</th><th>peer</th><th>peer state</th><th>last advert</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="listeners">
    <h2>listeners</h2>
    <table><thead><tr><th>listener</th><th>bind</th><th>TLS</th><th class="num">sessions</th></tr></thead><tbody></tbody></table>
  </section>
  <div id="pools"></div>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
  const csp = [
    "default-src 'none'",
    `style-src 'sha256-${sha256Base64(STYLE)}'`,
    `script-src 'sha256-${sha256Base64(SCRIPT)}'`,
    "connect-src 'self'",
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, csp };
}
