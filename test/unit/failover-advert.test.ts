import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ADVERT_LENGTH,
  AdvertCodec,
  FLAG_FAULT,
  FLAG_MASTER,
  intervalToCentiseconds,
  keyIdOf,
  type AdvertFields,
} from '../../src/failover/advert.js';
import { AdvertReceiver } from '../../src/failover/receiver.js';
import { ReplayGuard } from '../../src/failover/replay.js';

const KEY = Buffer.alloc(32, 7);
const OTHER_KEY = Buffer.alloc(32, 8);
const fields: AdvertFields = {
  routerId: 51,
  priority: 150,
  flags: FLAG_MASTER,
  intervalCs: 10,
  bootEpoch: 1_700_000_000_123n,
  counter: 42n,
};

describe('advert wire format (design.md §6b)', () => {
  it('lays out the 62 bytes exactly, big-endian, HMAC over all previous bytes', () => {
    const buf = new AdvertCodec(KEY).encode(fields);
    expect(buf.length).toBe(ADVERT_LENGTH);
    expect(buf.length).toBe(62);
    expect(buf.subarray(0, 4).toString('latin1')).toBe('MQLB');
    expect(buf[4]).toBe(1); // version
    expect(buf[5]).toBe(51); // router id
    expect(buf[6]).toBe(150); // priority
    expect(buf[7]).toBe(0x01); // flags
    expect(buf.readUInt16BE(8)).toBe(10); // interval cs
    expect(buf.subarray(10, 14)).toEqual(createHash('sha256').update(KEY).digest().subarray(0, 4));
    expect(buf.readBigUInt64BE(14)).toBe(1_700_000_000_123n);
    expect(buf.readBigUInt64BE(22)).toBe(42n);
    expect(buf.subarray(30)).toEqual(createHmac('sha256', KEY).update(buf.subarray(0, 30)).digest());
  });

  it('golden vector (fixed key and fields)', () => {
    const buf = new AdvertCodec(Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')).encode({
      routerId: 1,
      priority: 0,
      flags: FLAG_MASTER | FLAG_FAULT,
      intervalCs: 100,
      bootEpoch: 0x0102030405060708n,
      counter: 0xfffffffffffffffen,
    });
    // Computed independently with `openssl dgst -sha256 [-mac HMAC -macopt hexkey:...]`.
    expect(buf.toString('hex')).toBe(
      '4d514c42' + '01' + '01' + '00' + '03' + '0064' + '630dcd29' + '0102030405060708' + 'fffffffffffffffe' +
        'a79508a753a1282539d3519acbf11ae443f777b7a63725aebc551059fc39b1e8',
    );
  });

  it('round-trips', () => {
    const c = new AdvertCodec(KEY);
    expect(c.decode(c.encode(fields))).toEqual({ ok: true, advert: fields });
  });

  it('refuses out-of-range fields when encoding', () => {
    const c = new AdvertCodec(KEY);
    expect(() => c.encode({ ...fields, routerId: 0 })).toThrow(RangeError);
    expect(() => c.encode({ ...fields, priority: 256 })).toThrow(RangeError);
    expect(() => c.encode({ ...fields, intervalCs: 0 })).toThrow(RangeError);
    expect(() => c.encode({ ...fields, counter: 1n << 64n })).toThrow(RangeError);
  });

  it('malformed: wrong length, magic, version', () => {
    const c = new AdvertCodec(KEY);
    const good = c.encode(fields);
    expect(c.decode(good.subarray(0, 61))).toEqual({ ok: false, reason: 'malformed' });
    expect(c.decode(Buffer.concat([good, Buffer.alloc(1)]))).toEqual({ ok: false, reason: 'malformed' });
    const magic = Buffer.from(good);
    magic[0] = 0x58;
    expect(c.decode(magic)).toEqual({ ok: false, reason: 'malformed' });
    const version = Buffer.from(good);
    version[4] = 2;
    expect(c.decode(version)).toEqual({ ok: false, reason: 'malformed' });
  });

  it('bad_hmac: other key (key id differs), any flipped byte, a forged priority 255', () => {
    const c = new AdvertCodec(KEY);
    expect(c.decode(new AdvertCodec(OTHER_KEY).encode(fields))).toEqual({ ok: false, reason: 'bad_hmac' });
    const good = c.encode(fields);
    for (const i of [5, 6, 7, 8, 20, 29, 30, 61]) {
      const b = Buffer.from(good);
      b[i] = b[i]! ^ 0x01;
      expect(c.decode(b), `byte ${i}`).toEqual({ ok: false, reason: 'bad_hmac' });
    }
    const forged = Buffer.from(good);
    forged[6] = 255;
    expect(c.decode(forged)).toEqual({ ok: false, reason: 'bad_hmac' });
  });

  it('key id = first 4 bytes of SHA-256(key)', () => {
    expect(keyIdOf(KEY)).toEqual(createHash('sha256').update(KEY).digest().subarray(0, 4));
  });

  it('interval in centiseconds', () => {
    expect(intervalToCentiseconds(100)).toBe(10);
    expect(intervalToCentiseconds(1000)).toBe(100);
    expect(intervalToCentiseconds(1)).toBe(1);
    expect(intervalToCentiseconds(10_000_000)).toBe(0xffff);
  });
});

describe('receive pipeline', () => {
  const codec = new AdvertCodec(KEY);
  const mk = (allowed: string[] | null = ['10.0.0.2']) => {
    const replay = new ReplayGuard();
    replay.setOwnEpoch(99n);
    return new AdvertReceiver({
      codec,
      routerIds: new Set([51]),
      allowedSources: allowed === null ? null : new Set(allowed),
      replay,
      isOwnAddress: (a) => a === '10.0.0.1',
    });
  };

  it('accepts a fresh authentic advert and returns the sender as a number', () => {
    expect(mk().receive(codec.encode(fields), '10.0.0.2')).toEqual({ kind: 'advert', advert: fields, sender: 0x0a000002 });
  });

  it('ignores our own datagrams without counting them', () => {
    expect(mk().receive(codec.encode(fields), '10.0.0.1')).toEqual({ kind: 'own' });
  });

  it('drops with the contract reasons', () => {
    const r = mk();
    expect(r.receive(Buffer.alloc(10), '10.0.0.2')).toEqual({ kind: 'drop', reason: 'malformed' });
    expect(r.receive(new AdvertCodec(OTHER_KEY).encode(fields), '10.0.0.2')).toEqual({ kind: 'drop', reason: 'bad_hmac' });
    expect(r.receive(codec.encode({ ...fields, routerId: 52 }), '10.0.0.2')).toEqual({ kind: 'drop', reason: 'router_id', routerId: 52 });
    expect(r.receive(codec.encode(fields), '10.0.0.2').kind).toBe('advert');
    expect(r.receive(codec.encode(fields), '10.0.0.2')).toEqual({ kind: 'drop', reason: 'replay' });
  });

  it('an authentic advert from an address not in failover.peers is not ours to hear (router_id), marked as such', () => {
    expect(mk().receive(codec.encode(fields), '10.0.0.66')).toEqual({ kind: 'drop', reason: 'router_id', notPeer: true });
  });

  it('without a peer list, the same advert from a second address is still a replay', () => {
    const r = mk(null);
    expect(r.receive(codec.encode(fields), '10.0.0.2').kind).toBe('advert');
    expect(r.receive(codec.encode(fields), '10.0.0.66')).toEqual({ kind: 'drop', reason: 'replay' });
  });

  it('our own epoch coming back is a replay and asks for a new epoch', () => {
    expect(mk().receive(codec.encode({ ...fields, bootEpoch: 99n }), '10.0.0.2')).toEqual({ kind: 'drop', reason: 'replay', ownEpoch: true });
  });
});
