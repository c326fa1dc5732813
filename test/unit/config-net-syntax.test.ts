import { describe, expect, it } from 'vitest';
import { editDistance, suggestKey } from '../../src/config/did-you-mean.js';
import { parseHostPort } from '../../src/config/load.js';
import { isInterfaceName, parseCidr, parseHostPortDetailed, parseHttpUrl, parseVip, urlForLog } from '../../src/config/net-syntax.js';

describe('parseHostPort', () => {
  it.each([
    ['0.0.0.0:1883', { host: '0.0.0.0', port: 1883 }],
    ['[::]:1883', { host: '::', port: 1883 }],
    ['[::1]:8883', { host: '::1', port: 8883 }],
    ['[2001:db8::5]:1', { host: '2001:db8::5', port: 1 }],
    ['host:1883', { host: 'host', port: 1883 }],
    ['broker-1.example.com:65535', { host: 'broker-1.example.com', port: 65535 }],
    ['localhost:9883', { host: 'localhost', port: 9883 }],
  ])('%s', (text, expected) => {
    expect(parseHostPort(text)).toEqual(expected);
  });

  it.each([
    '1883',
    ':1883',
    'host:',
    'host:0',
    'host:65536',
    'host:+80',
    'host:80x',
    '::1:1883',
    '[::1]',
    '[::1]1883',
    '[10.0.0.1]:1883',
    '1.2.3:1883', // all-numeric last label: a broken IPv4, not a name
    '256.1.1.1:1883',
    '-host:1883',
    'host name:1883',
    'a;b:1883',
    '',
  ])('refuses %j', (text) => {
    expect(parseHostPort(text)).toBeNull();
  });

  it('explains what is wrong', () => {
    expect(parseHostPortDetailed('::1:1883')).toEqual({
      ok: false,
      error: '`::1:1883`: an IPv6 address needs brackets, e.g. `[::1]:1883`',
    });
    expect(parseHostPortDetailed('10.0.0.1')).toEqual({
      ok: false,
      error: '`10.0.0.1` has no port: write host:port, e.g. `10.0.0.1:1883`',
    });
    // Not IPv6 for all their colons: no advice to bracket them.
    expect(parseHostPortDetailed('tcp://127.0.0.1:1883/x')).toMatchObject({ error: '`tcp://127.0.0.1:1883/x` is a URL: write host:port without `tcp://`, e.g. `127.0.0.1:1883`' });
    expect(parseHostPortDetailed('0.0.0.0:1883,0.0.0.0:1884')).toMatchObject({ error: '`0.0.0.0:1883,0.0.0.0:1884` holds several addresses: write one host:port' });
    expect(parseHostPortDetailed('broker:1883:1')).toMatchObject({ error: '`broker:1883:1` is not host:port: too many `:` (IPv6 is written `[::1]:1883`)' });
  });
});

describe('parseCidr', () => {
  it('reads IPv4 and IPv6 prefixes, a bare address being one host', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ ok: true, value: { address: '10.0.0.0', prefix: 8, family: 4 } });
    expect(parseCidr('10.1.2.3')).toEqual({ ok: true, value: { address: '10.1.2.3', prefix: 32, family: 4 } });
    expect(parseCidr('2001:db8::/32')).toEqual({ ok: true, value: { address: '2001:db8::', prefix: 32, family: 6 } });
  });
  it.each(['10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '-6', 'eth0', '010.0.0.1/8'])('refuses %j', (text) => {
    expect(parseCidr(text).ok).toBe(false);
  });
});

describe('parseVip', () => {
  it('normalizes to a.b.c.d/n', () => {
    expect(parseVip('192.0.2.10/24')).toEqual({ ok: true, value: '192.0.2.10/24' });
    expect(parseVip('192.0.2.10')).toEqual({ ok: true, value: '192.0.2.10/32' });
  });
  it('refuses IPv6 with the contract message', () => {
    expect(parseVip('2001:db8::10/64')).toEqual({ ok: false, error: 'IPv6 VIPs are not supported yet' });
    expect(parseVip('::1')).toEqual({ ok: false, error: 'IPv6 VIPs are not supported yet' });
  });
  it.each(['-6', '10.0.0.1/33', '0.0.0.0/0', '10.0.0.1/0', '127.0.0.1/8', '224.0.0.18', '255.255.255.255', '10.0.0.1 dev lo'])(
    'refuses %j',
    (text) => {
      expect(parseVip(text).ok).toBe(false);
    },
  );
});

describe('isInterfaceName', () => {
  it.each(['eth0', 'ens3', 'br-lan', 'veth_a.10', 'wlp2s0'])('accepts %j', (name) => {
    expect(isInterfaceName(name)).toBe(true);
  });
  it.each(['-batch', '-force', 'eth0; touch /tmp/pwn', '$(reboot)', '`id`', 'a|b', 'eth0\nip link del eth0', '', 'a'.repeat(16), 'eth 0', 'a/b', 'eth0:1', '.eth0'])(
    'refuses %j',
    (name) => {
      expect(isInterfaceName(name)).toBe(false);
    },
  );
});

describe('parseHttpUrl', () => {
  it('accepts http and https with a host', () => {
    expect(parseHttpUrl('http://10.0.0.11:18083/api/v5/status').ok).toBe(true);
    expect(parseHttpUrl('https://broker.example/health').ok).toBe(true);
  });
  it.each(['ftp://x/', '10.0.0.11:18083/status', '/api/v5/status', 'http://', 'file:///etc/passwd'])('refuses %j', (text) => {
    expect(parseHttpUrl(text).ok).toBe(false);
  });
  // A security audit: a typo in the port put the EMQX API key into `check`'s output and a rejected reload's log line.
  it('never quotes the credentials of a URL it refuses', () => {
    const refused = [
      'http://admin:SECRETU1@127.0.0.1:99999/',
      'ftp://emqx:SECRETU2@10.0.0.11/status',
      'https://emqx:SECRET@U3@bad host/x',
      'http://SECRETU4@/nohost',
      'user:SECRETU5@127.0.0.1:20001/ok', // no scheme
    ].map((t) => parseHttpUrl(t));
    for (const r of refused) {
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error).not.toContain('SECRET');
        expect(r.error).toContain('***@');
      }
    }
    expect(refused[0]).toEqual({ ok: false, error: '`http://***@127.0.0.1:99999/` is not a URL (e.g. `http://10.0.0.11:18083/api/v5/status`)' });
  });
  // An observability audit: an API key passed as a query parameter was quoted by `check`, a rejected reload and the
  // `server moved` line.
  it("never quotes a query parameter's value either", () => {
    expect(parseHttpUrl('http://apikey:SECRET1@127.0.0.1:99999/bad?token=SECRET2&x')).toEqual({ ok: false, error: '`http://***@127.0.0.1:99999/bad?token=***&***` is not a URL (e.g. `http://10.0.0.11:18083/api/v5/status`)' });
    expect(urlForLog('127.0.0.1:1883 https://u:p@h:8080/s?a=1&b=&=c&&d#frag')).toBe('127.0.0.1:1883 https://***@h:8080/s?a=***&b=***&=***&&***#frag');
    expect(urlForLog('user:key@127.0.0.1:20001/ok?k=v')).toBe('***@127.0.0.1:20001/ok?k=***');
    expect(urlForLog('127.0.0.1:1883')).toBe('127.0.0.1:1883');
    // A re-audit: a space or a tab in a value, and path parameters.
    expect(urlForLog('127.0.0.1:1 http://h/s;tok=SECRET1;x?token=SECRET2 TAIL&b=SEC\tRET')).toBe('127.0.0.1:1 http://h/s;tok=***;***?token=***&b=***');
    // A second re-audit: whitespace in a path parameter or in the user information of a URL `check` refuses.
    expect(urlForLog('127.0.0.1:1 http://h/s;tok=SEC RETA1?x=1')).toBe('127.0.0.1:1 http://h/s;tok=***?x=***');
    for (const bad of ['http://user:SEC RETB1@127.0.0.1:99999/s', 'http://us er:SECRETC1@127.0.0.1:99999/', 'ftp://u:SEC\tRETE1@h/', 'http://u:SEC RETH1@[::1:27110/s', 'http://u:SEC/RETL1@127.0.0.1:27110/s', 'http://u:SEC#RETM1@127.0.0.1:27110/s', 'http://u:SEC?RETO1@127.0.0.1:27110/s']) {
      const r = parseHttpUrl(bad);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).not.toMatch(/SEC|RET/);
    }
  });
  // The URL parser keeps port 0, where nothing listens: the server would stay down for a typo that `check` passed.
  it('refuses port 0, with the credentials masked', () => {
    expect(parseHttpUrl('http://emqx:SECRET@10.0.0.11:0/api/v5/status')).toEqual({
      ok: false,
      error: '`http://***@10.0.0.11:0/api/v5/status` has port 0: give the port the broker\'s HTTP API listens on',
    });
    expect(parseHttpUrl('http://10.0.0.11:00/x').ok).toBe(false);
  });
  // A session-31 audit: `check` passed `http:///s` as a URL with host `s` (WHATWG parsing skips the slashes).
  it('refuses a tab or a line break, shown escaped on the one line (a re-audit: `http://\\t/h` was probed as host h)', () => {
    expect(parseHttpUrl('http://\n/127.0.0.1:21300/x')).toEqual({ ok: false, error: '`http://\\n/127.0.0.1:21300/x` holds a space, a tab, a line break or another control character: write the URL without them (a space as %20)' });
    expect(parseHttpUrl('http://u:SECRET@h/x\ty')).toEqual({ ok: false, error: '`http://***@h/x\\ty` holds a space, a tab, a line break or another control character: write the URL without them (a space as %20)' });
  });
  it('refuses a space or a control character at either end too (the parser strips them)', () => {
    for (const bad of ['http://h/x ', ' http://h/x', 'http://h/x\u0000', 'http://h/x\u000b', 'http://h/x\u000c']) expect(parseHttpUrl(bad).ok, JSON.stringify(bad)).toBe(false);
    expect(parseHttpUrl('http://h/x\u000b')).toEqual({ ok: false, error: '`http://h/x\\x0b` holds a space, a tab, a line break or another control character: write the URL without them (a space as %20)' });
    expect(parseHttpUrl('http://h/a%20b').ok).toBe(true);
  });
  it('wants exactly two slashes before the host', () => {
    expect(parseHttpUrl('http:///s')).toEqual({ ok: false, error: '`http:///s` must be written `http://HOST[:PORT]/PATH`: two slashes, then the host' });
    for (const bad of ['http:/s/x', 'https:s', 'http:\\\\s/x', 'HTTP:////h/x', 'http://\t/h/x', 'http://\n/h/x', 'http://h/x\ty', ' http://h/x']) expect(parseHttpUrl(bad).ok, JSON.stringify(bad)).toBe(false);
    for (const good of ['http://h/x', 'HTTPS://10.0.0.1:8443/api', 'http://[::1]:18083/s']) expect(parseHttpUrl(good)).toEqual({ ok: true, value: good });
  });
});

describe('did you mean', () => {
  it('computes edit distance with transpositions', () => {
    expect(editDistance('priority', 'priority')).toBe(0);
    expect(editDistance('pirority', 'priority')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
  });
  it('suggests close keys, folding case and separators', () => {
    const keys = ['name', 'bind', 'pool', 'maxConnections', 'tls', 'acceptProxyProtocol'];
    expect(suggestKey('maxConection', keys)).toBe('maxConnections');
    expect(suggestKey('max_connections', keys)).toBe('maxConnections');
    expect(suggestKey('MaxConnections', keys)).toBe('maxConnections');
    expect(suggestKey('pol', keys)).toBe('pool');
    expect(suggestKey('maxconn', keys)).toBe('maxConnections'); // HAProxy's word
    expect(suggestKey('certificate', keys)).toBeNull();
    expect(suggestKey('zzzzzz', keys)).toBeNull();
  });
  it('maps keepalived words onto failover keys', () => {
    const keys = ['interface', 'routerId', 'priority', 'vips', 'advertInterval', 'peers'];
    expect(suggestKey('virtual_router_id', keys)).toBe('routerId');
    expect(suggestKey('advert_int', keys)).toBe('advertInterval');
    expect(suggestKey('unicast_peer', keys)).toBe('peers');
  });
});
