// A NestJS ClientKafka that calls the interop handler matrix (served by a ksf server or by
// nest_service.mjs) and checks every result and error shape exactly.
// Usage: node nest_client.mjs BROKER        Exit 0 when every case passed.
import 'reflect-metadata';
import { ClientKafka } from '@nestjs/microservices';
import { lastValueFrom, toArray, timeout } from 'rxjs';
import { isDeepStrictEqual } from 'node:util';

const broker = process.argv[2];
if (!broker) {
  console.error('Usage: node nest_client.mjs BROKER');
  process.exit(2);
}

// [pattern, payload, expected] where expected is {values: [...]} or {error: ...}.
// Scalars come back as strings: NestJS serializes 42 as "42" and does not revive it.
const cases = [
  ['interop.object', { heroId: 1 }, { values: [{ id: 1, name: 'Mythical Sword' }] }],
  ['interop.array', {}, { values: [[{ id: 1 }, { id: 2 }]] }],
  ['interop.string', {}, { values: ['dragon slain'] }],
  ['interop.number', {}, { values: ['42'] }],
  ['interop.null', {}, { values: [null] }],
  ['interop.echo', { a: [1, 2.5, 'x', null, true] }, { values: [{ a: [1, 2.5, 'x', null, true] }] }],
  ['interop.echo', 'plain text', { values: ['plain text'] }],
  ['interop.rpc-string', {}, { error: { status: 'error', message: 'hero not found' } }],
  ['interop.rpc-object', {}, { error: { code: 42, message: 'bad dragon' } }],
  ['interop.plain-error', {}, { error: { status: 'error', message: 'Internal server error' } }],
  // A ksf guard (ksf_ctx_forbid) refuses as a NestJS guard returning false does.
  ['interop.guarded', {}, { error: { status: 'error', message: 'Forbidden resource' } }],
  ['interop.stream', {}, { values: ['0', '1', '2'] }],
  ['interop.async', { n: 7 }, { values: [{ async: true, got: { n: 7 } }] }],
];

const client = new ClientKafka({
  client: { clientId: 'interop', brokers: [broker], logLevel: 1 },
  consumer: { groupId: 'interop-nest', maxWaitTimeInMs: 5, sessionTimeout: 6000, heartbeatInterval: 500 },
  // connect() returns once the reply consumer has joined its group, but kafkajs looks up
  // where a partition without a committed offset starts (latest, by default) only at its
  // first fetch, after that. A reply that lands before that lookup is skipped, and its
  // request times out: CI saw the first case fail so, on a loaded machine. Reading from
  // the earliest offset when nothing is committed closes that window; replies read again
  // carry ids NestJS no longer waits for, and it ignores them.
  subscribe: { fromBeginning: true },
});
for (const p of new Set(cases.map((c) => c[0]))) {
  client.subscribeToResponseOf(p);
}
await client.connect();
// Rebalances of the reply consumer after connecting: kafkajs redelivers the rest of a
// batch after one, so a failure report says how many there were.
let rejoins = 0;
client.consumer.on(client.consumer.events.GROUP_JOIN, () => rejoins++);

let passed = 0;
let failed = 0;
for (const [pattern, payload, expected] of cases) {
  let got;
  try {
    const values = await lastValueFrom(client.send(pattern, payload).pipe(timeout(10000), toArray()));
    got = { values };
  } catch (err) {
    got = { error: err instanceof Error ? `local: ${err.message}` : err };
  }
  if (isDeepStrictEqual(got, expected)) {
    passed++;
    console.log(`ok ${pattern}`);
  } else {
    failed++;
    console.log(`not ok ${pattern}: expected ${JSON.stringify(expected)} got ${JSON.stringify(got)}` +
      ` (reply consumer rebalances so far: ${rejoins})`);
  }
}
await client.close();
console.log(`reply consumer rebalances after connect: ${rejoins}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
