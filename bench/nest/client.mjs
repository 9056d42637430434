// The NestJS load client of bench/run: ksf bench's loop and JSON line, on a ClientKafka.
// Usage: node client.mjs BROKER default|tuned [mock|kafka] (--count N | --duration S)
//                        [--concurrency C] [--emit] [--idle S] [--timeout-ms N]
import 'reflect-metadata';
import { ClientKafka } from '@nestjs/microservices';
import { timeout } from 'rxjs';
import { settings } from './settings.mjs';

const [broker, mode, ...rest] = process.argv.slice(2);
const brokerKind = rest[0] === 'mock' || rest[0] === 'kafka' ? rest.shift() : 'mock';
const o = { count: 0, duration: 0, concurrency: 1, emit: false, idle: 0, timeoutMs: 30000 };
for (let i = 0; i < rest.length; i++) {
  const a = rest[i];
  if (a === '--emit') o.emit = true;
  else if (a === '--count') o.count = Number(rest[++i]);
  else if (a === '--duration') o.duration = Number(rest[++i]);
  else if (a === '--concurrency') o.concurrency = Number(rest[++i]);
  else if (a === '--idle') o.idle = Number(rest[++i]);
  else if (a === '--timeout-ms') o.timeoutMs = Number(rest[++i]);
  else { console.error(`nest client: bad option ${a}`); process.exit(2); }
}
const t0us = Number(process.env.KSF_BENCH_T0_US || 0);
const { consumer } = settings(mode, brokerKind);
const client = new ClientKafka({ client: { clientId: 'bench', brokers: [broker], logLevel: 1 }, consumer });
const pattern = o.emit ? 'bench.event' : 'bench.echo';
const payload = { hero: 'bench', n: 42 };
if (!o.emit) client.subscribeToResponseOf(pattern);
const c0 = performance.now();
await client.connect();
const connectMs = performance.now() - c0;
console.error(`nest client: connected in ${connectMs.toFixed(1)} ms; running`);

const lat = [];
let issued = 0, done = 0, ok = 0, errors = 0, timeouts = 0, active = o.concurrency;
let firstWall = 0, endNs = 0n;
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const stopAt = o.duration ? t0 + BigInt(Math.round(o.duration * 1e9)) : 0n;
let finish;
const finished = new Promise((r) => { finish = r; });

function complete(start, kind) {
  const now = process.hrtime.bigint();
  if (!firstWall) firstWall = performance.timeOrigin * 1000 + performance.now() * 1000;
  lat.push(Number((now - start) / 1000n));
  done++;
  if (kind === 'ok') ok++; else if (kind === 'timeout') timeouts++; else errors++;
  if (o.count ? issued < o.count : now < stopAt) { issued++; issue(); return; }
  active--;
  if (now > endNs) endNs = now;
  if (active === 0) finish();
}
function issue() {
  const start = process.hrtime.bigint();
  const obs = o.emit ? client.emit(pattern, payload) : client.send(pattern, payload);
  obs.pipe(timeout(o.timeoutMs)).subscribe({
    complete: () => complete(start, 'ok'),
    error: (e) => complete(start, e && e.name === 'TimeoutError' ? 'timeout' : 'error'),
  });
}
if (o.count && o.concurrency > o.count) { o.concurrency = active = o.count; }
issued = o.concurrency;
for (let i = 0; i < o.concurrency; i++) issue();
await finished;
const cpu = process.cpuUsage(cpu0);
lat.sort((a, b) => a - b);
const pct = (q) => lat.length ? lat[Math.min(lat.length, Math.max(1, Math.ceil(q * lat.length))) - 1] : 0;
const elapsed = Number(endNs - t0) / 1e9;
const startWall = t0us || performance.timeOrigin * 1000;
console.log(JSON.stringify({
  pattern, mode: o.emit ? 'emit' : 'send', concurrency: o.concurrency, count: done, ok, errors,
  timeouts, p50_us: pct(0.5), p90_us: pct(0.9), p99_us: pct(0.99), max_us: pct(1), rps:
  elapsed > 0 ? done / elapsed : 0, elapsed_s: elapsed, connect_ms: connectMs,
  first_reply_ms: (firstWall - startWall) / 1000, cpu_ms: (cpu.user + cpu.system) / 1000,
  peak_rss_kb: process.resourceUsage().maxRSS,
}));
if (o.idle > 0) await new Promise((r) => setTimeout(r, o.idle * 1000));
await client.close();
process.exit(ok === done ? 0 : 1);
