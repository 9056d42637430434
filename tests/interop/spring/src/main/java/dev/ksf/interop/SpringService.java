package dev.ksf.interop;

import java.io.FileWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Collection;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Profile;
import org.springframework.context.event.EventListener;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.config.KafkaListenerEndpointRegistry;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.ConsumerAwareRebalanceListener;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.KafkaListenerErrorHandler;
import org.springframework.kafka.listener.MessageListenerContainer;
import org.springframework.kafka.support.KafkaNull;
import org.springframework.kafka.support.serializer.ToStringSerializer;
import org.springframework.messaging.Message;
import org.springframework.messaging.handler.annotation.SendTo;
import org.springframework.messaging.support.MessageBuilder;
import org.springframework.util.backoff.FixedBackOff;

/**
 * The handler matrix a ksf client calls (client.wire.dialect=spring): plain Spring Kafka
 * request/reply, String in and out as in Spring's own ReplyingKafkaTemplate examples.
 * Replies go out through a ToStringSerializer, so a handler may return an Integer.
 * Each listener has its own consumer group (the run id keeps them fresh), and starts at
 * the partition end it resolves on assignment, before "spring service ready".
 */
@Configuration
@Profile("server")
public class SpringService {

    @Value("${interop.event-log}")
    String eventLog;

    /** Partitions whose start position is resolved: readiness counts them. */
    static final Set<TopicPartition> positioned = ConcurrentHashMap.newKeySet();

    /** The Kafka plumbing: factories, the reply template, the error handler. */
    @Configuration
    @Profile("server")
    static class Beans {
        @Value("${spring.kafka.bootstrap-servers}")
        String brokers;

        @Bean
        ConsumerFactory<String, String> consumerFactory() {
            Map<String, Object> p = new HashMap<>();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
            return new DefaultKafkaConsumerFactory<>(p);
        }

        @Bean
        KafkaTemplate<String, Object> replyTemplate() {
            Map<String, Object> p = new HashMap<>();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ToStringSerializer.class);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
            return new KafkaTemplate<>(new DefaultKafkaProducerFactory<>(p));
        }

        @Bean
        ConcurrentKafkaListenerContainerFactory<String, String> kafkaListenerContainerFactory(
                ConsumerFactory<String, String> cf, KafkaTemplate<String, Object> replyTemplate) {
            var f = new ConcurrentKafkaListenerContainerFactory<String, String>();
            f.setConsumerFactory(cf);
            f.setReplyTemplate(replyTemplate);
            // Spring's default retries a failed record 9 more times before logging it; one
            // attempt shows the same outcome (no reply) with a tenth of the log.
            f.setCommonErrorHandler(new DefaultErrorHandler(new FixedBackOff(0, 0)));
            f.getContainerProperties()
                    .setConsumerRebalanceListener(
                            new ConsumerAwareRebalanceListener() {
                                @Override
                                public void onPartitionsAssigned(
                                        Consumer<?, ?> consumer, Collection<TopicPartition> parts) {
                                    for (TopicPartition tp : parts) {
                                        consumer.position(tp); // resolve "latest" now
                                        positioned.add(tp);
                                    }
                                }
                            });
            return f;
        }

        /**
         * Turns a handler's exception into the reply a ksf (or NestJS) caller reads as a
         * remote error: a null value with kafka_nest-err = {"status":"error","message":...}.
         */
        @Bean
        KafkaListenerErrorHandler nestErrors() {
            return (message, exception) -> {
                Throwable cause = exception.getCause() != null ? exception.getCause() : exception;
                String err = "{\"status\":\"error\",\"message\":" + jsonString(cause.getMessage()) + "}";
                return MessageBuilder.withPayload(KafkaNull.INSTANCE)
                        .setHeader("kafka_nest-err", err.getBytes(StandardCharsets.UTF_8))
                        .build();
            };
        }
    }

    static String jsonString(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }

    // ---- the matrix ------------------------------------------------------------------

    @KafkaListener(id = "object", groupId = "spring-interop-${interop.run}-object", topics = "spring.object")
    @SendTo
    public String object(String in) {
        return "{\"id\":1,\"name\":\"Mythical Sword\"}";
    }

    @KafkaListener(id = "array", groupId = "spring-interop-${interop.run}-array", topics = "spring.array")
    @SendTo
    public String array(String in) {
        return "[{\"id\":1},{\"id\":2}]";
    }

    @KafkaListener(id = "string", groupId = "spring-interop-${interop.run}-string", topics = "spring.string")
    @SendTo
    public String string(String in) {
        return "dragon slain";
    }

    @KafkaListener(id = "number", groupId = "spring-interop-${interop.run}-number", topics = "spring.number")
    @SendTo
    public Integer number(String in) {
        return 42;
    }

    /** Returns null: Spring then sends no reply at all. */
    @KafkaListener(id = "null", groupId = "spring-interop-${interop.run}-null", topics = "spring.null")
    @SendTo
    public String nullResult(String in) {
        return null;
    }

    /** The way to send a null value from Spring: a KafkaNull payload. */
    @KafkaListener(id = "kafka-null", groupId = "spring-interop-${interop.run}-kafka-null", topics = "spring.kafka-null")
    @SendTo
    public Message<?> kafkaNull(String in) {
        return MessageBuilder.withPayload(KafkaNull.INSTANCE).build();
    }

    @KafkaListener(id = "echo", groupId = "spring-interop-${interop.run}-echo", topics = "spring.echo")
    @SendTo
    public String echo(String in) {
        return in;
    }

    /** Throws; the nestErrors handler answers with kafka_nest-err. */
    @KafkaListener(id = "error", groupId = "spring-interop-${interop.run}-error", topics = "spring.error", errorHandler = "nestErrors")
    @SendTo
    public String error(String in) {
        throw new IllegalStateException("hero not found");
    }

    /** Throws with no listener error handler: Spring logs it and sends nothing. */
    @KafkaListener(id = "error-plain", groupId = "spring-interop-${interop.run}-error-plain", topics = "spring.error-plain")
    @SendTo
    public String errorPlain(String in) {
        throw new IllegalStateException("no reply for this one");
    }

    @KafkaListener(id = "slow", groupId = "spring-interop-${interop.run}-slow", topics = "spring.slow")
    @SendTo
    public String slow(String in) throws InterruptedException {
        Thread.sleep(1500);
        return "slow done";
    }

    /** The request headers as Spring read them. */
    @KafkaListener(id = "headers", groupId = "spring-interop-${interop.run}-headers", topics = "spring.headers")
    @SendTo
    public String headers(ConsumerRecord<String, String> rec) {
        Header cid = rec.headers().lastHeader("kafka_correlationId");
        Header topic = rec.headers().lastHeader("kafka_replyTopic");
        Header part = rec.headers().lastHeader("kafka_replyPartition");
        return "{\"correlationIdBytes\":" + (cid == null ? -1 : cid.value().length)
                + ",\"replyTopic\":"
                + (topic == null ? "null" : jsonString(new String(topic.value(), StandardCharsets.UTF_8)))
                + ",\"replyPartitionBytes\":" + (part == null ? -1 : part.value().length)
                + ",\"replyPartition\":"
                + (part == null || part.value().length != 4 ? -1 : ByteBuffer.wrap(part.value()).getInt())
                + "}";
    }

    /** An event: no @SendTo. Appends {"topic":...,"data":<value>} to the event log. */
    @KafkaListener(id = "event", groupId = "spring-interop-${interop.run}-event", topics = "spring.event")
    public void event(ConsumerRecord<String, String> rec) {
        try (FileWriter w = new FileWriter(eventLog, StandardCharsets.UTF_8, true)) {
            w.write("{\"topic\":" + jsonString(rec.topic()) + ",\"data\":" + rec.value() + "}\n");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** "spring service ready" once every listener's partitions have positions. */
    @EventListener(ApplicationReadyEvent.class)
    public void announceReady(ApplicationReadyEvent ev) {
        KafkaListenerEndpointRegistry registry = ev.getApplicationContext().getBean(KafkaListenerEndpointRegistry.class);
        Thread t = new Thread(() -> {
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                int want = 0;
                boolean all = true;
                for (MessageListenerContainer c : registry.getListenerContainers()) {
                    Collection<TopicPartition> a = c.getAssignedPartitions();
                    if (a == null || a.isEmpty()) {
                        all = false;
                    } else {
                        want += a.size();
                        all &= positioned.containsAll(a);
                    }
                }
                if (all && want > 0) {
                    System.out.println("spring service ready (" + want + " partitions)");
                    System.out.flush();
                    return;
                }
                try {
                    Thread.sleep(100);
                } catch (InterruptedException e) {
                    return;
                }
            }
            System.out.println("spring service NOT ready after 120 s");
            System.out.flush();
        });
        t.setDaemon(true);
        t.start();
    }
}
