// The NestJS side of bench/run: a ServerKafka whose handler bench.echo returns the payload.
// Usage: node server.mjs BROKER default|tuned [mock|kafka]   (prints "nest server ready"
//        when listening)
//        node server.mjs --describe default|tuned [mock|kafka]   (the settings, one line)
// default: NestJS/kafkajs defaults; tuned: see settings.mjs (per broker kind).
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MessagePattern, Transport } from '@nestjs/microservices';
import { describe, settings } from './settings.mjs';

const [broker, mode, brokerKind = 'mock'] = process.argv.slice(2);
if (broker === '--describe') {
  console.log(describe(mode, brokerKind));
  process.exit(0);
}
class EchoController {
  echo(data) { return data; }
}
MessagePattern('bench.echo')(EchoController.prototype, 'echo',
  Object.getOwnPropertyDescriptor(EchoController.prototype, 'echo'));
Controller()(EchoController);
class AppModule {}
Module({ controllers: [EchoController] })(AppModule);

const { consumer, run } = settings(mode, brokerKind);
const app = await NestFactory.createMicroservice(AppModule, {
  logger: ['error', 'warn'],
  transport: Transport.KAFKA,
  options: { client: { clientId: 'bench', brokers: [broker], logLevel: 1 }, consumer, run },
});
await app.listen();
console.log('nest server ready');
const stop = async () => { await app.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
