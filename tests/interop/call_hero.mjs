// A NestJS ClientKafka calling the ksf hero service: the README's "C from NestJS" example.
// Usage: node tests/interop/call_hero.mjs BROKER
import 'reflect-metadata';
import { ClientKafka } from '@nestjs/microservices';
import { lastValueFrom, timeout } from 'rxjs';

const client = new ClientKafka({
  client: { clientId: 'hero', brokers: [process.argv[2] ?? 'localhost:9092'], logLevel: 1 },
  consumer: { groupId: 'hero-consumer', maxWaitTimeInMs: 5 },
  // Without it the first reply can be skipped: kafkajs looks up a new reply consumer's
  // start (latest) only at its first fetch, after connect() returned (README.md).
  subscribe: { fromBeginning: true },
});
client.subscribeToResponseOf('hero.kill.dragon');
await client.connect();
const items = await lastValueFrom(
  client.send('hero.kill.dragon', { heroId: 1, dragonId: 7 }).pipe(timeout(10000)));
console.log(JSON.stringify(items));
await lastValueFrom(client.emit('hero.dragon.killed', { heroId: 1, dragonId: 7 }));
await client.close();
