// A NestJS ClientKafka that shares its reply group with a ksf client (run.sh starts
// `ksf bench` in the same group once this prints "ready"). It keeps CONCURRENCY requests
// to interop.echo in flight for SECONDS and checks every reply is its own request's echo.
// Usage: node mixed_client.mjs BROKER GROUP SECONDS
import 'reflect-metadata';
import { ClientKafka } from '@nestjs/microservices';
import { lastValueFrom, timeout } from 'rxjs';

const [broker, group, seconds] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const CONCURRENCY = 4;
const client = new ClientKafka({
  client: { clientId: 'interop-mixed-nest', brokers: [broker], logLevel: 1 },
  consumer: { groupId: group, maxWaitTimeInMs: 5, sessionTimeout: 6000, heartbeatInterval: 500 },
  // The ksf client joining makes this group rebalance. A NestJS reply consumer at its
  // default (latest) that had not committed yet resumes after the rebalance at the end
  // of its partition, skipping the replies that arrived meanwhile: its requests then
  // time out (kafkajs's behaviour, seen here as 4 of 8 requests lost). Reading from the
  // earliest offset when nothing is committed keeps them; the replies it reads again
  // carry ids NestJS no longer waits for, and it ignores those.
  subscribe: { fromBeginning: true },
});
client.subscribeToResponseOf('interop.echo');
await client.connect();
console.log('nest mixed client ready');

let next = 0, ok = 0, wrong = 0, failed = 0;
const end = Date.now() + seconds * 1000;
async function worker() {
  while (Date.now() < end) {
    const i = next++;
    try {
      const got = await lastValueFrom(client.send('interop.echo', { i }).pipe(timeout(20000)));
      if (got && got.i === i) ok++; else wrong++;
    } catch (err) {
      failed++;
      console.log(`request ${i} failed: ${err instanceof Error ? err.message : JSON.stringify(err)}`);
    }
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker));
const assigned = JSON.stringify(client.getConsumerAssignments?.() ?? {});
await client.close();
console.log(`nest mixed client: ${next} sent, ${ok} ok, ${wrong} wrong, ${failed} failed; reply partitions ${assigned}`);
const pass = next > 0 && ok === next;
console.log(`${pass ? 1 : 0} passed, ${pass ? 0 : 1} failed`);
process.exit(pass ? 0 : 1);
