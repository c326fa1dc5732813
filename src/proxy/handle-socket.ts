/**
 * A TCP socket on Node's own libuv stream handle (the `TCP` object net.Socket wraps), without net.Socket's
 * Readable/Writable machinery. Why: a proxied connection is two sockets, and building, connecting and tearing
 * down two net.Sockets was most of our CPU per connection (bench/README.md "What limits": about 380 µs per
 * connection against HAProxy's 120; a prototype on handles measured 155-160 µs in the same harness). Reads
 * and writes make the same system calls as net.Socket; what goes is the JavaScript around them.
 *
 * The handle API is Node's internal one (`process.binding('tcp_wrap')`, the same objects net.js uses). It
 * is stable across Node 20-22 but not a public contract, so `handleSockets()` checks every member we use and
 * answers null when anything is missing; callers then use net.Socket. MQTT_LB_SOCKETS=net forces net.Socket.
 *
 * Semantics follow net.Socket (allowHalfOpen false unless set): a 'data' listener starts reading unless
 * paused; write() returns false past 16 KiB queued and 'drain' follows when the queue is empty; on the peer's
 * FIN, 'end' and then our own FIN after pending writes (half-open: when end() is called); 'error' (with `code`) and
 * 'close' (hadError) are emitted once the handle is closed, never synchronously inside a call.
 */
import { EventEmitter } from 'node:events';
import { lookup, type LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import { getSystemErrorName } from 'node:util';
import type { ProxySocket } from './proxy-socket.js';

/** How long one address of a dialled name may take before the next is tried (net's autoSelectFamilyAttemptTimeout). */
const ATTEMPT_MS = 250;
/** libuv's UV_EAI_NONAME: a name that resolved to no address. */
export const UV_EAI_NONAME = -3008;

/** net.Socket's default writable highWaterMark. */
const HIGH_WATER_MARK = 16 * 1024;
/** libuv's UV_EOF. */
const UV_EOF = -4095;

interface PeerName {
  address?: string;
  port?: number;
  family?: string;
}

/** The members of Node's TCPWrap that we call (lib/net.js calls the same). */
interface TcpHandle {
  /** With a user buffer (useUserBuffer) the bytes are in that buffer; a Buffer returned here would replace it. */
  onread: (this: TcpHandle) => void;
  readonly writeQueueSize: number;
  readonly bytesRead: number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Buffer): number;
  shutdown(req: ShutdownReq): number;
  close(callback: (this: TcpHandle) => void): void;
  reset(callback: (this: TcpHandle) => void): number;
  setNoDelay(enable: boolean): number;
  setKeepAlive(enable: boolean, initialDelaySeconds: number): number;
  getpeername(out: PeerName): number;
  getsockname(out: PeerName): number;
  connect(req: ConnectReq, address: string, port: number): number;
  connect6(req: ConnectReq, address: string, port: number): number;
  useUserBuffer(buffer: Buffer): void;
  [kOwner]?: HandleSocket;
}

interface WriteReq {
  handle: TcpHandle | null;
  oncomplete: (this: WriteReq, status: number) => void;
  async: boolean;
  /** Keeps the bytes alive while libuv still writes them. */
  buffer: Buffer | null;
}
interface ShutdownReq {
  handle: TcpHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
}
interface ConnectReq {
  oncomplete: (this: ConnectReq, status: number, handle: TcpHandle) => void;
  address: string;
  port: number;
}

interface Bindings {
  newTcp(): TcpHandle;
  newWriteReq(): WriteReq;
  newShutdownReq(): ShutdownReq;
  newConnectReq(): ConnectReq;
  state: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
  /** Every HandleSocket reads into this one buffer (see READ_BUFFER_BYTES). */
  readBuffer: Buffer;
}

/**
 * Every HandleSocket reads into one process-wide buffer (Node's user-buffer reads, the `onread` option of
 * net.Socket) and each read is copied out into a Buffer of its own size. Why: by default Node reads into a
 * fresh 64 KiB allocation per read, each one an ArrayBuffer that V8 must sweep. With GC on the main thread
 * (the launcher's --single-threaded-gc, for the reason in bin/mqtt-lb) that sweep was nearly all of every
 * scavenge: 4-6 ms pauses every few seconds at 10,000 msg/s (`--trace-gc-nvp`: sweep_array_buffers 3.9-5.3 of
 * 4.4-6.3 ms), the p99 latency against HAProxy's. A copy of a small read is a slice of Buffer's shared pool,
 * so far fewer ArrayBuffers exist. Why copy at all: a write the kernel does not take at once keeps pointing at
 * the bytes it was given, and the next read anywhere would overwrite the shared buffer under it.
 */
const READ_BUFFER_BYTES = 64 * 1024;

const kOwner = Symbol('mqtt-lb.handle-socket');

let bindings: Bindings | null | undefined;

/**
 * The handle bindings, or null when this Node does not offer them in the shape we use (or MQTT_LB_SOCKETS=net).
 * Checked once per process.
 */
export function handleSockets(): Bindings | null {
  if (bindings === undefined) bindings = process.env.MQTT_LB_SOCKETS === 'net' ? null : loadBindings();
  return bindings;
}

/** Which sockets plain TCP sessions use in this process (logged at start). */
export function socketEngine(): 'handles' | 'net' {
  return handleSockets() === null ? 'net' : 'handles';
}

function loadBindings(): Bindings | null {
  try {
    const binding = (process as unknown as { binding?: (name: string) => Record<string, unknown> }).binding;
    if (typeof binding !== 'function') return null;
    const tcp = binding('tcp_wrap');
    const stream = binding('stream_wrap');
    const TCP = tcp.TCP as (new (type: number) => TcpHandle) | undefined;
    const TCPConnectWrap = tcp.TCPConnectWrap as (new () => ConnectReq) | undefined;
    const SOCKET = (tcp.constants as { SOCKET?: number } | undefined)?.SOCKET;
    const WriteWrap = stream.WriteWrap as (new () => WriteReq) | undefined;
    const ShutdownWrap = stream.ShutdownWrap as (new () => ShutdownReq) | undefined;
    const state = stream.streamBaseState;
    const { kReadBytesOrError, kLastWriteWasAsync } = stream as Record<string, unknown>;
    if (typeof TCP !== 'function' || typeof TCPConnectWrap !== 'function' || typeof WriteWrap !== 'function' || typeof ShutdownWrap !== 'function') return null;
    if (typeof SOCKET !== 'number' || !(state instanceof Int32Array)) return null;
    if (typeof kReadBytesOrError !== 'number' || typeof kLastWriteWasAsync !== 'number') return null;
    const probe = new TCP(SOCKET);
    const methods = ['readStart', 'readStop', 'writeBuffer', 'shutdown', 'close', 'reset', 'setNoDelay', 'setKeepAlive', 'getpeername', 'getsockname', 'connect', 'connect6', 'useUserBuffer'] as const;
    const complete = methods.every((m) => typeof probe[m] === 'function') && typeof probe.writeQueueSize === 'number' && typeof probe.bytesRead === 'number';
    probe.close(noop);
    if (!complete) return null;
    return {
      newTcp: () => new TCP(SOCKET),
      newWriteReq: () => new WriteWrap(),
      newShutdownReq: () => new ShutdownWrap(),
      newConnectReq: () => new TCPConnectWrap(),
      state,
      kReadBytesOrError,
      kLastWriteWasAsync,
      readBuffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
    };
  } catch {
    return null;
  }
}

function noop(): void {}

/** An Error shaped like Node's errnoException (code, errno, syscall). */
export function errnoError(status: number, syscall: string, address?: string, port?: number): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(status);
  } catch {
    code = `E${-status}`;
  }
  const where = address === undefined ? '' : port === undefined ? ` ${address}` : ` ${address}:${port}`;
  const err: NodeJS.ErrnoException = new Error(`${syscall} ${code}${where}`);
  err.code = code;
  err.errno = status;
  err.syscall = syscall;
  return err;
}

/**
 * A write request for the next write. A write that completes synchronously (the common case: the kernel
 * takes the bytes at once) leaves the request untouched, so it is used again and no object is allocated
 * per write; one that goes asynchronous keeps it, and a new spare is made.
 */
let spareWriteReq: WriteReq | null = null;

type Listener = (...args: any[]) => void;

/**
 * The events a session listens to, each with a slot for its first listener. EventEmitter keeps listeners in a
 * per-object dictionary whose shapes differ per socket, so every emit and on() was a megamorphic lookup (perf:
 * `KeyedLoadIC_Megamorphic` among the top user-space symbols per connection); a session adds one listener per
 * event, so a field per event serves nearly every call. Further listeners go to the EventEmitter, after it.
 */
const SLOT_DATA = 0;
const SLOT_END = 1;
const SLOT_DRAIN = 2;
const SLOT_CONNECT = 3;
const SLOT_ERROR = 4;
const SLOT_CLOSE = 5;

function slotOf(event: string | symbol): number {
  switch (event) {
    case 'data':
      return SLOT_DATA;
    case 'end':
      return SLOT_END;
    case 'drain':
      return SLOT_DRAIN;
    case 'connect':
      return SLOT_CONNECT;
    case 'error':
      return SLOT_ERROR;
    case 'close':
      return SLOT_CLOSE;
    default:
      return -1;
  }
}

/** EventEmitter's once() wrapper carries the original listener here (removeListener matches either). */
function matches(registered: Listener, listener: Listener): boolean {
  return registered === listener || (registered as { listener?: Listener }).listener === listener;
}

export interface DialOptions {
  host: string;
  port: number;
  noDelay: boolean;
  /** Resolves a host name (dns.lookup of all its addresses by default; net.connect's `lookup` option, in short). */
  resolve?: ResolveName;
}

export type AddressesCallback = (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void;
export type ResolveName = (host: string, callback: AddressesCallback) => void;

/** dns.lookup of every address of `host`, in the resolver's order. */
export function lookupAll(host: string, callback: AddressesCallback): void {
  lookup(host, { all: true }, callback);
}

export class HandleSocket extends EventEmitter implements ProxySocket {
  private handle: TcpHandle | null;
  private readonly b: Bindings;
  /** null until a 'data' listener or resume() asks for reading (as net.Socket's readableFlowing). */
  private flowing: boolean | null = null;
  private reading = false;
  /** A chunk that arrived while paused, and whether the FIN followed it (delivered on resume). */
  private held: Buffer | null = null;
  private heldEof = false;
  private connecting: boolean;
  private dialOptions: DialOptions | null = null;
  private awaitingLookup = false;
  /** The addresses of a dialled name not tried yet, and the timer that moves on from a silent one. */
  private alternatives: LookupAddress[] | null = null;
  private attemptTimer: NodeJS.Timeout | null = null;
  private writesBeforeConnect: Buffer[] | null = null;
  /** Asynchronous writes not yet completed. */
  private inflightWrites = 0;
  private needDrain = false;
  /** Our FIN is requested (end()). */
  private ending = false;
  /** Our FIN waits for the writes in flight: asked of libuv once they are done (wrote). */
  private shutdownAfterWrites = false;
  /** libuv holds our shutdown request (shutdownNow until shutDown): it refuses a reset meanwhile (close). */
  private shuttingDown = false;
  /** The peer's FIN arrived. */
  private eof = false;
  private error: Error | null = null;
  private peer: PeerName | null = null;
  private local: PeerName | null = null;
  private finalBytesRead = 0;
  /** The first listener of each slotted event (see SLOT_DATA). */
  private readonly slots: Array<Listener | null> = [null, null, null, null, null, null];
  /** Bit per slot: the EventEmitter also holds listeners for that event. */
  private overflow = 0;
  destroyed = false;
  /** As net.Socket's: false sends our FIN on the peer's; true leaves it to end() (a session's client side). */
  allowHalfOpen = false;
  /**
   * A FIN that arrives while paused is passed on at once ('end'), as net.Socket does when it holds no data (a
   * held chunk stops reading, so none is held then), instead of after resume(). For a session before routing:
   * it learns that a client waiting in the accept queue has left. Not while splicing: there the pause is
   * backpressure, and the FIN must wait behind the bytes still queued for the other side (a lingering close
   * started at once would be bounded while a slow reader still has them to read).
   */
  endWhilePaused = false;
  /**
   * While flowing, each read is passed to the 'data' listeners as a view of the shared read buffer, valid only
   * during that call, instead of a copy of its own: for a listener that copies what it keeps at once (a session
   * reading its client's CONNECT: session.ts receive). The copy is then the listener's, inside the memory ceiling's
   * count (limits.maxMemory): a copy made here came before any session could refuse it, and a flood of large
   * CONNECTs overshot the ceiling by one loop turn's reads. Never for a listener that may keep the chunk (a write
   * the kernel does not take at once keeps pointing at it): the splice clears it. A held chunk is a copy always.
   */
  lendReads = false;

  /** An accepted connection; TCP_NODELAY and keepalive are set here unless it has them from the listener. */
  static accepted(b: Bindings, handle: TcpHandle, noDelay: boolean, keepAliveInitialDelayMs: number): HandleSocket {
    const s = new HandleSocket(b, handle, false);
    if (noDelay) handle.setNoDelay(true);
    if (keepAliveInitialDelayMs > 0) handle.setKeepAlive(true, Math.floor(keepAliveInitialDelayMs / 1000));
    return s;
  }

  /** Dial host:port ('connect' on success; 'error' then 'close' on failure). Host names are resolved first. */
  static dial(b: Bindings, options: DialOptions): HandleSocket {
    const s = new HandleSocket(b, b.newTcp(), true);
    s.dialOptions = options;
    const family = isIP(options.host);
    if (family !== 0) {
      s.connectTo(options.host, family);
    } else {
      s.awaitingLookup = true;
      (options.resolve ?? lookupAll)(options.host, (err, addresses) => s.resolved(err, addresses));
    }
    return s;
  }

  private constructor(b: Bindings, handle: TcpHandle, connecting: boolean) {
    super();
    this.b = b;
    this.handle = handle;
    this.connecting = connecting;
    this.own(handle);
  }

  private own(handle: TcpHandle): void {
    handle[kOwner] = this;
    handle.onread = onHandleRead;
    handle.useUserBuffer(this.b.readBuffer);
  }

  get bytesRead(): number {
    return this.handle === null ? this.finalBytesRead : this.handle.bytesRead;
  }

  /** As net.Socket.setKeepAlive (delay in milliseconds, whole seconds on the wire); a no-op until connected and once closed. */
  setKeepAlive(enable: boolean, initialDelayMs = 0): this {
    if (this.handle !== null && !this.destroyed && !this.connecting) this.handle.setKeepAlive(enable, Math.floor(initialDelayMs / 1000));
    return this;
  }

  get writableLength(): number {
    if (this.writesBeforeConnect !== null) return this.writesBeforeConnect.reduce((n, buf) => n + buf.length, 0);
    return this.handle === null ? 0 : this.handle.writeQueueSize;
  }

  get remoteAddress(): string | undefined {
    return this.peerName()?.address;
  }

  get remotePort(): number | undefined {
    return this.peerName()?.port;
  }

  get localAddress(): string | undefined {
    return this.sockName()?.address;
  }

  get localPort(): number | undefined {
    return this.sockName()?.port;
  }

  private peerName(): PeerName | null {
    if (this.peer === null && this.handle !== null && !this.connecting) {
      const out: PeerName = {};
      if (this.handle.getpeername(out) === 0) this.peer = out;
    }
    return this.peer;
  }

  private sockName(): PeerName | null {
    if (this.local === null && this.handle !== null && !this.connecting) {
      const out: PeerName = {};
      if (this.handle.getsockname(out) === 0) this.local = out;
    }
    return this.local;
  }

  // ── events ────────────────────────────────────────────────────────────────────────────────────────────

  override on(event: string | symbol, listener: Listener): this {
    const i = slotOf(event);
    // A listener goes to the slot only when it would be the event's first: emission order stays the order
    // of registration (slot, then the EventEmitter's).
    if (i >= 0 && this.slots[i] === null && (this.overflow & (1 << i)) === 0) this.slots[i] = listener;
    else {
      super.on(event, listener);
      if (i >= 0) this.overflow |= 1 << i;
    }
    // As net.Socket: adding a 'data' listener starts the flow unless the socket was paused.
    if (i === SLOT_DATA && this.flowing !== false) this.resume();
    return this;
  }

  override addListener(event: string | symbol, listener: Listener): this {
    return this.on(event, listener);
  }

  override removeListener(event: string | symbol, listener: Listener): this {
    const i = slotOf(event);
    const slotted = i >= 0 ? this.slots[i] : null;
    if (slotted != null && matches(slotted, listener)) {
      this.slots[i] = null;
      return this;
    }
    super.removeListener(event, listener);
    if (i >= 0 && super.listenerCount(event) === 0) this.overflow &= ~(1 << i);
    return this;
  }

  override prependListener(event: string | symbol, listener: Listener): this {
    const i = slotOf(event);
    if (i < 0) return super.prependListener(event, listener);
    // Before the slotted one: both move to the EventEmitter, in that order.
    const slotted = this.slots[i];
    if (slotted != null) {
      this.slots[i] = null;
      super.prependListener(event, slotted);
    }
    super.prependListener(event, listener);
    this.overflow |= 1 << i;
    if (i === SLOT_DATA && this.flowing !== false) this.resume();
    return this;
  }

  override listeners(event: string | symbol): Listener[] {
    const slotted = this.slots[slotOf(event)] ?? null;
    const rest = super.listeners(event) as Listener[];
    return slotted === null ? rest : [(slotted as { listener?: Listener }).listener ?? slotted, ...rest];
  }

  override rawListeners(event: string | symbol): Listener[] {
    const slotted = this.slots[slotOf(event)] ?? null;
    const rest = super.rawListeners(event) as Listener[];
    return slotted === null ? rest : [slotted, ...rest];
  }

  override off(event: string | symbol, listener: Listener): this {
    return this.removeListener(event, listener);
  }

  override removeAllListeners(event?: string | symbol): this {
    if (event === undefined) {
      this.slots.fill(null);
      this.overflow = 0;
    } else {
      const i = slotOf(event);
      if (i >= 0) {
        this.slots[i] = null;
        this.overflow &= ~(1 << i);
      }
    }
    return super.removeAllListeners(event);
  }

  override listenerCount(event: string | symbol): number {
    const i = slotOf(event);
    return (i >= 0 && this.slots[i] !== null ? 1 : 0) + super.listenerCount(event);
  }

  override emit(event: string | symbol, ...args: any[]): boolean {
    const i = slotOf(event);
    if (i < 0) return super.emit(event, ...args);
    const slotted = this.slots[i];
    // 'error' with no listener at all throws, as EventEmitter does.
    if (slotted === null) return (this.overflow & (1 << i)) !== 0 || i === SLOT_ERROR ? super.emit(event, ...args) : false;
    slotted.apply(this, args);
    if ((this.overflow & (1 << i)) !== 0) super.emit(event, ...args);
    return true;
  }

  /** emit() for our own events, without the rest-argument array. */
  private fire(i: number, event: string, arg?: unknown): void {
    const slotted = this.slots[i];
    if (slotted != null) {
      if (arg === undefined) slotted.call(this);
      else slotted.call(this, arg);
    }
    if ((this.overflow & (1 << i)) !== 0) {
      if (arg === undefined) super.emit(event);
      else super.emit(event, arg);
    }
  }

  // ── reading ───────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Stop 'data' events. Reading stops only when a chunk actually arrives while paused (that chunk is held
   * and delivered first on resume): libuv re-arms a stopped descriptor with two epoll_ctl calls, and a
   * session pauses its client while it routes the CONNECT, when usually nothing more arrives. At most one
   * read's worth (64 KiB) is held per socket.
   */
  pause(): this {
    this.flowing = false;
    return this;
  }

  resume(): this {
    this.flowing = true;
    const held = this.held;
    if (held !== null) {
      this.held = null;
      this.fire(SLOT_DATA, 'data', held);
      if (this.flowing !== true || this.destroyed) return this;
    }
    if (this.heldEof) {
      this.heldEof = false;
      this.peerEnded();
      return this;
    }
    if (!this.reading && !this.connecting && !this.eof && this.handle !== null && !this.destroyed) {
      this.reading = true;
      const err = this.handle.readStart();
      if (err !== 0) this.destroyWith(errnoError(err, 'read'));
    }
    return this;
  }

  private stopReading(): void {
    if (this.reading) {
      this.reading = false;
      this.handle!.readStop();
    }
  }

  /** From onHandleRead. */
  received(): void {
    const n = this.b.state[this.b.kReadBytesOrError]!;
    if (n > 0) {
      if (this.destroyed) return;
      if (this.lendReads && this.flowing === true) {
        this.fire(SLOT_DATA, 'data', this.b.readBuffer.subarray(0, n));
        return;
      }
      // Out of the shared read buffer before anything else can read into it (READ_BUFFER_BYTES).
      const chunk = Buffer.allocUnsafe(n);
      this.b.readBuffer.copy(chunk, 0, 0, n);
      if (this.flowing === true) {
        this.fire(SLOT_DATA, 'data', chunk);
        return;
      }
      this.held = chunk;
      this.stopReading();
      return;
    }
    if (n === 0) return;
    if (n !== UV_EOF) {
      this.destroyWith(errnoError(n, 'read'));
      return;
    }
    // The peer's FIN (libuv stopped reading). While paused it waits, like a held chunk, unless endWhilePaused.
    this.eof = true;
    this.reading = false;
    if (this.flowing === true || (this.flowing === false && this.endWhilePaused)) this.peerEnded();
    else this.heldEof = true;
  }

  /**
   * 'end', then our FIN (net.Socket with allowHalfOpen false). Half-open, our FIN waits for end(), which then
   * closes; or, if end() came first, the socket closes now that both directions are done.
   */
  private peerEnded(): void {
    this.fire(SLOT_END, 'end');
    if (this.destroyed) return;
    if (this.allowHalfOpen && !this.ending) return;
    // Nothing of ours in flight: close() itself sends the FIN (the receive queue is empty after EOF, so no
    // reset), saving the shutdown call and the poll round it needs; also when our end() is still waiting for
    // libuv to run its shutdown (the request is cancelled: the FIN goes out with the close), or already ran it.
    if (this.inflightWrites === 0 && this.handle!.writeQueueSize === 0) this.destroy();
    else this.end();
  }

  // ── writing ───────────────────────────────────────────────────────────────────────────────────────────

  write(data: Buffer): boolean {
    if (this.destroyed || this.ending) return false;
    if (this.connecting) {
      (this.writesBeforeConnect ??= []).push(data);
      if (this.writableLength < HIGH_WATER_MARK) return true;
      this.needDrain = true;
      return false;
    }
    return this.send(data);
  }

  private send(data: Buffer): boolean {
    const handle = this.handle!;
    const req = spareWriteReq ?? this.b.newWriteReq();
    spareWriteReq = null;
    req.handle = handle;
    req.oncomplete = onWriteComplete;
    req.async = false;
    const err = handle.writeBuffer(req, data);
    if (err !== 0) {
      spareWriteReq = req;
      this.destroyWith(errnoError(err, 'write'));
      return false;
    }
    if (this.b.state[this.b.kLastWriteWasAsync] === 0) {
      req.handle = null;
      spareWriteReq = req;
      return true;
    }
    // The kernel's buffer is full: libuv writes the rest when the socket is writable again.
    req.async = true;
    req.buffer = data;
    this.inflightWrites++;
    if (handle.writeQueueSize >= HIGH_WATER_MARK) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  /** From onWriteComplete. */
  wrote(status: number): void {
    this.inflightWrites--;
    if (this.destroyed) return;
    if (status < 0) {
      this.destroyWith(errnoError(status, 'write'));
      return;
    }
    if (this.inflightWrites === 0 && this.needDrain) {
      this.needDrain = false;
      this.fire(SLOT_DRAIN, 'drain');
    }
    if (this.inflightWrites === 0 && this.shutdownAfterWrites && !this.destroyed) {
      this.shutdownAfterWrites = false;
      // Half-open after the peer's FIN: close() sends our FIN (as in end()).
      if (this.eof) this.destroy();
      else this.shutdownNow();
    }
  }

  end(data?: Buffer): this {
    if (data !== undefined) this.write(data);
    if (this.ending || this.destroyed) return this;
    this.ending = true;
    if (this.connecting) return this; // sent after the connect, behind the queued writes
    // Half-open after the peer's FIN, with nothing in flight: close() sends our FIN (as in peerEnded).
    if (this.eof && this.inflightWrites === 0 && this.handle!.writeQueueSize === 0) return this.destroy();
    this.shutdownAfterQueue();
    return this;
  }

  /**
   * Our FIN once every write in flight is done, as net.Socket sends it (its end() waits for the writable to finish),
   * not a shutdown request queued behind them in libuv: while one is pending libuv refuses a reset (EINVAL), and
   * Node's handle is then left closing without ever closing (a re-audit: a lingering session that was to be reset
   * with its queue unread never ended). So a side given up on with bytes still queued can be reset.
   */
  private shutdownAfterQueue(): void {
    if (this.inflightWrites > 0) this.shutdownAfterWrites = true;
    else this.shutdownNow();
  }

  private shutdownNow(): void {
    const handle = this.handle!;
    const req = this.b.newShutdownReq();
    req.handle = handle;
    req.oncomplete = onShutdownComplete;
    // libuv sends the FIN after every queued write.
    const err = handle.shutdown(req);
    if (err !== 0) this.destroyWith(errnoError(err, 'shutdown'));
    else this.shuttingDown = true;
  }

  /** From onShutdownComplete. */
  shutDown(status: number): void {
    this.shuttingDown = false;
    if (this.destroyed) return;
    if (status < 0 && status !== UV_ENOTCONN) {
      this.destroyWith(errnoError(status, 'shutdown'));
      return;
    }
    // Both directions done: nothing more can happen on this socket.
    if (this.eof) this.destroy();
  }

  // ── connecting ────────────────────────────────────────────────────────────────────────────────────────

  /** Dialled by name and the name not resolved yet. */
  get resolving(): boolean {
    return this.awaitingLookup;
  }

  private resolved(err: NodeJS.ErrnoException | null, addresses: LookupAddress[]): void {
    this.awaitingLookup = false;
    if (this.destroyed) return;
    if (err !== null || addresses.length === 0) {
      this.destroyWith(err ?? errnoError(UV_EAI_NONAME, 'getaddrinfo', this.dialOptions!.host));
      return;
    }
    // A name with several addresses (`localhost`: ::1 and 127.0.0.1, a broker on one of them) is tried address
    // by address, as net.connect does (autoSelectFamily), and as the health probes reach it: otherwise a probe
    // says up while every session is refused on the first address.
    if (addresses.length > 1) this.alternatives = addresses.slice(1);
    this.connectTo(addresses[0]!.address, addresses[0]!.family);
  }

  /**
   * The connect to one of several addresses failed, or took ATTEMPT_MS: the next one on a fresh handle (a socket
   * whose connect failed cannot connect again). False when none is left.
   */
  private tryNextAddress(): boolean {
    const next = this.alternatives?.shift();
    if (next === undefined) return false;
    if (this.alternatives!.length === 0) this.alternatives = null;
    this.clearAttemptTimer();
    const failed = this.handle!;
    failed[kOwner] = undefined;
    failed.close(noop);
    this.reading = false;
    const handle = this.b.newTcp();
    this.handle = handle;
    this.own(handle);
    this.connectTo(next.address, next.family);
    return true;
  }

  private clearAttemptTimer(): void {
    if (this.attemptTimer !== null) {
      clearTimeout(this.attemptTimer);
      this.attemptTimer = null;
    }
  }

  private connectTo(address: string, family: number): void {
    const o = this.dialOptions!;
    const req = this.b.newConnectReq();
    req.oncomplete = onConnectComplete;
    req.address = address;
    req.port = o.port;
    const handle = this.handle!;
    const err = family === 6 ? handle.connect6(req, address, o.port) : handle.connect(req, address, o.port);
    if (err !== 0) {
      if (!this.tryNextAddress()) this.destroyWith(errnoError(err, 'connect', address, o.port));
      return;
    }
    // Ask for reads now, while libuv still waits for the connect: the descriptor is then registered for both
    // events at once. Started after the connect (as net.Socket does), libuv re-arms it with ADD, EEXIST, MOD.
    // Nothing is read before 'connect' (libuv finishes the connect first); a chunk that comes before a 'data'
    // listener is held as when paused.
    if (handle.readStart() === 0) this.reading = true;
    // An address that drops the SYN must not use up the session's whole dial time (Node's net waits 250 ms too).
    if (this.alternatives !== null) this.attemptTimer = setTimeout(onAttemptTimeout, ATTEMPT_MS, this);
  }

  /** From onAttemptTimeout. */
  attemptTimedOut(): void {
    this.attemptTimer = null;
    if (!this.destroyed && this.connecting) this.tryNextAddress();
  }

  /** From onConnectComplete. */
  connected(status: number, address: string, port: number): void {
    if (this.destroyed) return;
    this.clearAttemptTimer();
    if (status !== 0) {
      if (!this.tryNextAddress()) this.destroyWith(errnoError(status, 'connect', address, port));
      return;
    }
    this.alternatives = null;
    this.connecting = false;
    const o = this.dialOptions!;
    this.dialOptions = null;
    const handle = this.handle!;
    if (o.noDelay) handle.setNoDelay(true);
    const queued = this.writesBeforeConnect;
    this.writesBeforeConnect = null;
    if (queued !== null) for (const buf of queued) if (!this.destroyed) this.send(buf);
    if (this.ending && !this.destroyed) this.shutdownAfterQueue();
    this.fire(SLOT_CONNECT, 'connect');
    if (this.needDrain && this.inflightWrites === 0 && !this.destroyed) {
      this.needDrain = false;
      this.fire(SLOT_DRAIN, 'drain');
    }
    if (this.flowing === true) this.resume();
  }

  // ── closing ───────────────────────────────────────────────────────────────────────────────────────────

  destroy(): this {
    this.close(false);
    return this;
  }

  /** Close with RST (SO_LINGER 0), as net.Socket.resetAndDestroy. */
  resetAndDestroy(): this {
    this.close(true);
    return this;
  }

  private destroyWith(err: Error): void {
    if (this.destroyed) return;
    this.error = err;
    this.close(false);
  }

  private close(reset: boolean): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.clearAttemptTimer();
    this.reading = false;
    this.held = null;
    this.writesBeforeConnect = null;
    const handle = this.handle!;
    this.finalBytesRead = handle.bytesRead;
    // A reset needs a connected socket and no shutdown pending in libuv (shutdownAfterQueue); otherwise a plain close.
    // (A reset libuv refuses cannot fall back: Node marks the handle closing all the same and ignores the close below.
    // The pending shutdown is the one refusal known on Linux, and it is avoided above.)
    if (reset && !this.connecting && !this.shuttingDown && handle.reset(onHandleClosed) === 0) return;
    handle.close(onHandleClosed);
  }

  /** From onHandleClosed: the descriptor is gone. 'error' (if any) then 'close', as net.Socket. */
  closed(): void {
    const handle = this.handle;
    if (handle === null) return;
    // (onread stays: the handle's accessor accepts functions only, and the closed handle never reads.)
    handle[kOwner] = undefined;
    this.handle = null;
    const err = this.error;
    if (err !== null && this.listenerCount('error') > 0) this.fire(SLOT_ERROR, 'error', err);
    this.fire(SLOT_CLOSE, 'close', err !== null);
  }
}

/** libuv's UV_ENOTCONN: shutting down a socket the peer already reset is not worth an error of its own. */
const UV_ENOTCONN = -107;

// Module-level callbacks (no closure per socket): each finds its socket through the handle.

// Returns nothing: Node would take a returned Buffer as the handle's next read buffer.
function onHandleRead(this: TcpHandle): void {
  const s = this[kOwner];
  if (s !== undefined) s.received();
}

function onWriteComplete(this: WriteReq, status: number): void {
  const s = this.handle?.[kOwner];
  this.handle = null;
  this.buffer = null;
  if (s !== undefined) s.wrote(status);
}

function onShutdownComplete(this: ShutdownReq, status: number): void {
  this.handle[kOwner]?.shutDown(status);
}

function onAttemptTimeout(s: HandleSocket): void {
  s.attemptTimedOut();
}

function onConnectComplete(this: ConnectReq, status: number, handle: TcpHandle): void {
  handle[kOwner]?.connected(status, this.address, this.port);
}

function onHandleClosed(this: TcpHandle): void {
  this[kOwner]?.closed();
}


export type { Bindings as HandleBindings, TcpHandle };
