// A NestJS microservice (ServerKafka) exposing the interop handler matrix.
// Usage: node nest_service.mjs BROKER   (prints "nest service ready" when listening)
// Plain JavaScript: decorators are applied by calling them, so no TypeScript build is needed.
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, Payload, RpcException, Transport } from '@nestjs/microservices';
import { interval, of, take } from 'rxjs';
import { appendFileSync } from 'node:fs';

const broker = process.argv[2];
const eventLog = process.env.KSF_INTEROP_EVENT_LOG; // one JSON line per event received

class MatrixController {
  object() { return { id: 1, name: 'Mythical Sword' }; }
  array() { return [{ id: 1 }, { id: 2 }]; }
  string() { return 'dragon slain'; }
  number() { return 42; }
  nullResult() { return null; }
  echo(data) { return data; }
  rpcString() { throw new RpcException('hero not found'); }
  rpcObject() { throw new RpcException({ code: 42, message: 'bad dragon' }); }
  plainError() { throw new Error('kaboom'); }
  stream() { return interval(20).pipe(take(3)); }
  streamSync() { return of(1, 2, 3); }
  async asyncResult(data) {
    await new Promise((r) => setTimeout(r, 10));
    return { async: true, got: data };
  }
  context(data, ctx) {
    const msg = ctx.getMessage();
    const headers = {};
    for (const [k, v] of Object.entries(msg.headers ?? {})) {
      headers[k] = Buffer.isBuffer(v) ? v.toString('hex') : v;
    }
    // Not `key`/`headers`: NestJS would take an object with a `key` property for a
    // ready-made Kafka message (wire doc section 2, the {key, value} gotcha).
    return {
      topic: ctx.getTopic(),
      partition: ctx.getPartition(),
      msgKey: msg.key === null ? null : String(msg.key),
      msgHeaders: headers,
    };
  }
  event(data, ctx) {
    if (eventLog) {
      appendFileSync(eventLog, JSON.stringify({ topic: ctx.getTopic(), data }) + '\n');
    }
  }
}

const messagePatterns = {
  object: 'interop.object', array: 'interop.array', string: 'interop.string',
  number: 'interop.number', nullResult: 'interop.null', echo: 'interop.echo',
  rpcString: 'interop.rpc-string', rpcObject: 'interop.rpc-object',
  plainError: 'interop.plain-error', stream: 'interop.stream',
  streamSync: 'interop.stream-sync', asyncResult: 'interop.async',
  context: 'interop.context',
};
for (const [method, pattern] of Object.entries(messagePatterns)) {
  const d = Object.getOwnPropertyDescriptor(MatrixController.prototype, method);
  MessagePattern(pattern)(MatrixController.prototype, method, d);
}
{
  const d = Object.getOwnPropertyDescriptor(MatrixController.prototype, 'event');
  EventPattern('interop.event')(MatrixController.prototype, 'event', d);
}
// Without TypeScript's parameter metadata Nest passes only the payload: name the context
// parameter explicitly where a handler reads it.
for (const method of ['context', 'event']) {
  Payload()(MatrixController.prototype, method, 0);
  Ctx()(MatrixController.prototype, method, 1);
}
Controller()(MatrixController);

class AppModule {}
Module({ controllers: [MatrixController] })(AppModule);

const app = await NestFactory.createMicroservice(AppModule, {
  logger: ['error', 'warn'],
  transport: Transport.KAFKA,
  options: {
    client: { clientId: 'interop', brokers: [broker], logLevel: 1 },
    consumer: { groupId: 'interop-nest', maxWaitTimeInMs: 5, sessionTimeout: 6000,
                heartbeatInterval: 500 },
    // listen() returns once the group is joined; kafkajs looks up where a partition
    // without a committed offset starts (latest) only at its first fetch after that,
    // so a request sent at once could be skipped (as nest_client.mjs's replies could).
    // Each run's broker is fresh: nothing older is there to be answered.
    subscribe: { fromBeginning: true },
  },
});
await app.listen();
console.log('nest service ready');
const stop = async () => { await app.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
