// The NestJS side of bench/run: a ServerKafka whose handler bench.echo returns the payload.
// Usage: node server.mjs BROKER default|tuned   (prints "nest server ready" when listening)
// default: NestJS/kafkajs defaults; tuned: consumer maxWaitTimeInMs=0 (latency first).
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MessagePattern, Transport } from '@nestjs/microservices';

const [broker, mode] = process.argv.slice(2);
class EchoController {
  echo(data) { return data; }
}
MessagePattern('bench.echo')(EchoController.prototype, 'echo',
  Object.getOwnPropertyDescriptor(EchoController.prototype, 'echo'));
Controller()(EchoController);
class AppModule {}
Module({ controllers: [EchoController] })(AppModule);

const consumer = mode === 'tuned' ? { groupId: 'bench-nest', maxWaitTimeInMs: 0 } : { groupId: 'bench-nest' };
const app = await NestFactory.createMicroservice(AppModule, {
  logger: ['error', 'warn'],
  transport: Transport.KAFKA,
  options: { client: { clientId: 'bench', brokers: [broker], logLevel: 1 }, consumer },
});
await app.listen();
console.log('nest server ready');
const stop = async () => { await app.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
