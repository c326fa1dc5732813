#!/usr/bin/env node
/**
 * Attacker's toolbox for the netns failover tests (uses the COMPILED advert codec from dist/).
 *
 *   node advert-tool.mjs '<json>' with one of:
 *   {"op":"capture","group":G,"port":P,"local":ADDR,"count":N,"timeoutMs":T}
 *        joins G on ADDR, prints {"from",hex} per datagram received (N of them, or until T), then exits
 *   {"op":"send","to":ADDR,"port":P,"hex":[...],"gapMs":5,"local":ADDR (for a multicast `to`)}
 *        sends each datagram (from this namespace's own address) and exits
 *   {"op":"forge","keyB64":K,"to":ADDR,"port":P,"fields":{routerId,priority,flags,intervalCs},"count":N}
 *        encodes N adverts with key K, a fresh epoch and counters 1..N, sends them
 */
import dgram from 'node:dgram';

const { AdvertCodec } = await import(new URL('../../dist/src/failover/advert.js', import.meta.url).href);
const o = JSON.parse(process.argv[2]);
const out = (x) => process.stdout.write(`${JSON.stringify(x)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Sends each datagram; to a multicast group via `local` (the namespace has no multicast route). */
async function sendAll(bufs, to, port, gapMs = 5, local) {
  const s = dgram.createSocket('udp4');
  await new Promise((resolve) => s.bind(0, resolve));
  if (local) {
    s.setMulticastInterface(local);
    s.setMulticastTTL(1);
  }
  for (const b of bufs) {
    await new Promise((resolve, reject) => s.send(b, port, to, (err) => (err ? reject(err) : resolve())));
    await sleep(gapMs);
  }
  s.close();
}

if (o.op === 'capture') {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  let n = 0;
  const finish = () => {
    s.close();
    process.exit(0);
  };
  s.on('message', (buf, r) => {
    out({ from: r.address, hex: buf.toString('hex') });
    if (++n >= o.count) finish();
  });
  s.bind({ port: o.port, address: '0.0.0.0' }, () => {
    s.addMembership(o.group, o.local);
    out({ ev: 'listening' });
  });
  setTimeout(finish, o.timeoutMs ?? 5000);
} else if (o.op === 'send') {
  await sendAll(o.hex.map((h) => Buffer.from(h, 'hex')), o.to, o.port, o.gapMs, o.local);
  out({ ev: 'sent', count: o.hex.length });
} else if (o.op === 'forge') {
  const codec = new AdvertCodec(Buffer.from(o.keyB64, 'base64'));
  const epoch = BigInt(Date.now());
  const bufs = [];
  for (let i = 1; i <= (o.count ?? 1); i++) bufs.push(codec.encode({ ...o.fields, bootEpoch: epoch, counter: BigInt(i) }));
  await sendAll(bufs, o.to, o.port, o.gapMs, o.local);
  out({ ev: 'sent', count: bufs.length });
} else {
  process.stderr.write(`unknown op ${o.op}\n`);
  process.exit(1);
}
