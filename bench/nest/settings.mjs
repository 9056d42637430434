// The kafkajs settings of bench/run's NestJS rows, shared by server.mjs and client.mjs.
// settings(mode, broker): mode 'default' (NestJS's and kafkajs's defaults) or 'tuned';
// broker 'mock' (the embedded broker, default) or 'kafka' (a real Apache Kafka broker).
// The result's consumer goes to NestJS's options.consumer, run (servers) to options.run.
export function settings(mode, broker = 'mock') {
  const s = { consumer: { groupId: 'bench-nest' }, run: {} };
  if (mode !== 'tuned') return s;
  if (broker === 'mock') {
    // The mock holds an empty fetch for the whole wait and is not woken by new data.
    s.consumer.maxWaitTimeInMs = 0;
    return s;
  }
  // A real broker answers a held fetch as soon as data arrives, so maxWaitTimeInMs stays
  // at kafkajs's 5000 (0 made every fetch return at once: more CPU, no lower latency).
  // What limits NestJS there is its server awaiting each reply's produce before the
  // next message: let it handle the 4 request partitions at once, as ksf's 4 workers do
  // (about 2x the requests/s at 256 in flight; docs/benchmarks.md).
  s.run.partitionsConsumedConcurrently = 4;
  return s;
}

// One line for the benchmark's table: what "tuned" changes.
export function describe(mode, broker) {
  const s = settings(mode, broker);
  const parts = [];
  for (const [k, v] of Object.entries(s.consumer)) if (k !== 'groupId') parts.push(`consumer.${k}=${v}`);
  for (const [k, v] of Object.entries(s.run)) parts.push(`run.${k}=${v}`);
  return parts.length ? parts.join(', ') : 'NestJS and kafkajs defaults';
}
