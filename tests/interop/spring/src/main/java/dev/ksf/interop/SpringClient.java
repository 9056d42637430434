package dev.ksf.interop;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Profile;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.ProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.support.TopicPartitionOffset;

/**
 * Spring callers of ksf services (examples/hero's hero_server, tests/interop's
 * interop_server): three ReplyingKafkaTemplates, all String in and out.
 * <ul>
 *   <li>{@code assigned}: its reply container holds partition 2 of spring-interop.replies
 *       only, so Spring sends kafka_replyPartition (4-byte int 2); a reply error checker
 *       turns a kafka_nest-err header into a failed future (KsfRemoteException).
 *   <li>{@code unchecked}: partition 1 of the same topic and no error checker: what a
 *       Spring caller sees of a ksf error when it does not look.
 *   <li>{@code grouped}: its container subscribes to spring-interop.replies-group in a
 *       group, so Spring sends no kafka_replyPartition and ksf's partitioner picks one.
 * </ul>
 */
@Configuration
@Profile("client")
public class SpringClient {

    static final String REPLIES = "spring-interop.replies";
    static final String REPLIES_GROUP = "spring-interop.replies-group";

    /** A ksf remote error: the kafka_nest-err header's text. */
    public static class KsfRemoteException extends RuntimeException {
        public KsfRemoteException(String err) {
            super(err);
        }
    }

    /** The Kafka plumbing: factories and the three templates. */
    @Configuration
    @Profile("client")
    static class Beans {
        @Value("${spring.kafka.bootstrap-servers}")
        String brokers;

        @Value("${interop.run}")
        String run;

        @Bean
        ProducerFactory<String, String> producerFactory() {
            Map<String, Object> p = new HashMap<>();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
            return new DefaultKafkaProducerFactory<>(p);
        }

        @Bean
        ConsumerFactory<String, String> consumerFactory() {
            Map<String, Object> p = new HashMap<>();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, "spring-interop-client-" + run);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
            return new DefaultKafkaConsumerFactory<>(p);
        }

        static ReplyingKafkaTemplate<String, String, String> template(
                ProducerFactory<String, String> pf, ConsumerFactory<String, String> cf,
                ContainerProperties props, boolean checkErrors) {
            var container = new KafkaMessageListenerContainer<>(cf, props);
            var t = new ReplyingKafkaTemplate<>(pf, container);
            t.setDefaultReplyTimeout(Duration.ofSeconds(15));
            if (checkErrors) {
                // Spring's hook for remote errors: a reply whose headers say it failed
                // completes the future exceptionally instead of with its (null) value.
                t.setReplyErrorChecker(rec -> {
                    Header err = rec.headers().lastHeader("kafka_nest-err");
                    return err == null ? null
                            : new KsfRemoteException(new String(err.value(), StandardCharsets.UTF_8));
                });
            }
            return t;
        }

        @Bean
        ReplyingKafkaTemplate<String, String, String> assigned(
                ProducerFactory<String, String> pf, ConsumerFactory<String, String> cf) {
            return template(pf, cf, new ContainerProperties(new TopicPartitionOffset(REPLIES, 2)), true);
        }

        @Bean
        ReplyingKafkaTemplate<String, String, String> unchecked(
                ProducerFactory<String, String> pf, ConsumerFactory<String, String> cf) {
            return template(pf, cf, new ContainerProperties(new TopicPartitionOffset(REPLIES, 1)), false);
        }

        @Bean
        ReplyingKafkaTemplate<String, String, String> grouped(
                ProducerFactory<String, String> pf, ConsumerFactory<String, String> cf) {
            ContainerProperties props = new ContainerProperties(REPLIES_GROUP);
            props.setGroupId("spring-interop-client-group-" + run);
            return template(pf, cf, props, true);
        }
    }

    final ReplyingKafkaTemplate<String, String, String> assigned, unchecked, grouped;
    int passed, failed;

    SpringClient(@Qualifier("assigned") ReplyingKafkaTemplate<String, String, String> assigned,
            @Qualifier("unchecked") ReplyingKafkaTemplate<String, String, String> unchecked,
            @Qualifier("grouped") ReplyingKafkaTemplate<String, String, String> grouped) {
        this.assigned = assigned;
        this.unchecked = unchecked;
        this.grouped = grouped;
    }

    void check(String name, boolean ok, String detail) {
        if (ok) {
            passed++;
            System.out.println("ok " + name);
        } else {
            failed++;
            System.out.println("not ok " + name + ": " + detail);
        }
        System.out.flush();
    }

    /** What one call produced: the reply record, or the exception the future failed with. */
    record Outcome(ProducerRecord<String, String> request, ConsumerRecord<String, String> reply,
            Throwable error) {
        String describe() {
            if (error != null) {
                return error.getClass().getSimpleName() + ": " + error.getMessage();
            }
            return "value " + (reply.value() == null ? "null" : "'" + reply.value() + "'")
                    + " partition " + reply.partition();
        }
    }

    static Outcome call(ReplyingKafkaTemplate<String, String, String> t, String topic, String value) {
        var req = new ProducerRecord<String, String>(topic, value);
        try {
            var reply = t.sendAndReceive(req).get(20, TimeUnit.SECONDS);
            return new Outcome(req, reply, null);
        } catch (ExecutionException e) {
            return new Outcome(req, null, e.getCause());
        } catch (Exception e) {
            return new Outcome(req, null, e);
        }
    }

    static byte[] header(ProducerRecord<?, ?> r, String name) {
        Header h = r.headers().lastHeader(name);
        return h == null ? null : h.value();
    }

    static byte[] header(ConsumerRecord<?, ?> r, String name) {
        Header h = r.headers().lastHeader(name);
        return h == null ? null : h.value();
    }

    /** Expect the value @p want (null: a null value) at reply partition @p partition (-1: any). */
    void expectValue(String name, ReplyingKafkaTemplate<String, String, String> t, String topic,
            String value, String want, int partition) {
        expectValue(name, t, topic, value, want, partition, true);
    }

    /** @p last: the reply carries kafka_nest-is-disposed (false: a stream's first value). */
    void expectValue(String name, ReplyingKafkaTemplate<String, String, String> t, String topic,
            String value, String want, int partition, boolean last) {
        Outcome o = call(t, topic, value);
        boolean ok = o.error == null && Objects.equals(o.reply.value(), want)
                && (partition < 0 || o.reply.partition() == partition)
                // ksf echoes Spring's 16 correlation bytes exactly and ends with
                // kafka_nest-is-disposed = 0x00, as it does for NestJS callers.
                && Arrays.equals(header(o.reply, "kafka_correlationId"), header(o.request, "kafka_correlationId"))
                && Arrays.equals(header(o.reply, "kafka_nest-is-disposed"), last ? new byte[] {0} : null);
        check(name, ok, "expected value " + (want == null ? "null" : "'" + want + "'")
                + (partition < 0 ? "" : " partition " + partition) + "; got " + o.describe());
    }

    void expectRemoteError(String name, String topic, String err) {
        Outcome o = call(assigned, topic, "{}");
        boolean ok = o.error instanceof KsfRemoteException && err.equals(o.error.getMessage());
        check(name, ok, "expected KsfRemoteException: " + err + "; got " + o.describe());
    }

    /** Returns the number of failed checks. */
    int runAll() throws Exception {
        for (var t : java.util.List.of(assigned, unchecked, grouped)) {
            if (!t.waitForAssignment(Duration.ofSeconds(60))) {
                check("reply container assignment", false, "no assignment after 60 s");
                return failed;
            }
        }
        // The reply consumers resolve "latest" on their first fetch: until a first reply
        // has come back, one could land before that position and be skipped.
        for (var t : java.util.List.of(assigned, unchecked, grouped)) {
            warmUp(t);
        }
        String hero = "[{\"id\":1,\"name\":\"Mythical Sword\"},{\"id\":2,\"name\":\"Key to Dungeon\"}]";
        expectValue("hero.kill.dragon", assigned, "hero.kill.dragon", "{\"heroId\":1,\"dragonId\":7}", hero, 2);
        expectValue("hero.kill.dragon (grouped)", grouped, "hero.kill.dragon", "{\"heroId\":1}", hero, -1);
        expectValue("interop.object", assigned, "interop.object", "{\"heroId\":1}",
                "{\"id\":1,\"name\":\"Mythical Sword\"}", 2);
        expectValue("interop.array", assigned, "interop.array", "{}", "[{\"id\":1},{\"id\":2}]", 2);
        expectValue("interop.string", assigned, "interop.string", "{}", "dragon slain", 2);
        expectValue("interop.number", assigned, "interop.number", "{}", "42", 2);
        expectValue("interop.null", assigned, "interop.null", "{}", null, 2);
        expectValue("interop.echo object", assigned, "interop.echo", "{\"a\":[1,2.5,\"x\",null,true]}",
                "{\"a\":[1,2.5,\"x\",null,true]}", 2);
        expectValue("interop.echo text", assigned, "interop.echo", "plain text", "plain text", 2);
        expectValue("interop.echo number", assigned, "interop.echo", "7", "7", 2);
        expectValue("interop.async", assigned, "interop.async", "{\"n\":7}",
                "{\"async\":true,\"got\":{\"n\":7}}", 2);
        // A stream's first message completes Spring's future; Spring logs the later ones
        // as "No pending reply".
        expectValue("interop.stream (first value)", assigned, "interop.stream", "{}", "0", 2, false);
        expectRemoteError("interop.rpc-string", "interop.rpc-string",
                "{\"status\":\"error\",\"message\":\"hero not found\"}");
        expectRemoteError("interop.rpc-object", "interop.rpc-object",
                "{\"code\":42,\"message\":\"bad dragon\"}");
        expectRemoteError("interop.plain-error", "interop.plain-error",
                "{\"status\":\"error\",\"message\":\"Internal server error\"}");
        // Without the checker the same failure is a null value; only the header tells.
        Outcome o = call(unchecked, "interop.rpc-string", "{}");
        check("interop.rpc-string (no error checker)",
                o.error == null && o.reply.value() == null && o.reply.partition() == 1
                        && Arrays.equals(header(o.reply, "kafka_nest-err"),
                                "{\"status\":\"error\",\"message\":\"hero not found\"}".getBytes(StandardCharsets.UTF_8)),
                "expected a null value with kafka_nest-err at partition 1; got " + o.describe());
        expectMeta("interop.meta", assigned, REPLIES, 2);
        expectMeta("interop.meta (grouped)", grouped, REPLIES_GROUP, -1);
        System.out.println(passed + " passed, " + failed + " failed");
        return failed;
    }

    /** ksf's interop.meta handler returns what ksf read from Spring's request headers. */
    void expectMeta(String name, ReplyingKafkaTemplate<String, String, String> t, String replyTopic,
            int partition) {
        Outcome o = call(t, "interop.meta", "{}");
        String want = null;
        if (o.error == null) {
            ByteBuffer id = ByteBuffer.wrap(header(o.request, "kafka_correlationId"));
            want = "{\"correlationId\":\"" + new UUID(id.getLong(), id.getLong())
                    + "\",\"correlationIdBytes\":16,\"replyTopic\":\"" + replyTopic
                    + "\",\"replyPartition\":" + partition + "}";
        }
        check(name, o.error == null && o.reply.value() != null && o.reply.value().equals(want),
                "expected " + want + "; got " + o.describe());
    }

    /** One call through the assigned template: prints the value, or the error on stderr. */
    boolean callOnce(String pattern, String value) throws Exception {
        if (!assigned.waitForAssignment(Duration.ofSeconds(60))) {
            System.err.println("the reply container got no partition in 60 s");
            return false;
        }
        Outcome o = call(assigned, pattern, value);
        if (o.error != null) {
            System.err.println(pattern + ": " + o.describe());
            return false;
        }
        System.out.println(o.reply.value());
        return true;
    }

    void warmUp(ReplyingKafkaTemplate<String, String, String> t) {
        for (int i = 0; i < 20; i++) {
            var req = new ProducerRecord<String, String>("interop.echo", "warm-up");
            try {
                t.sendAndReceive(req, Duration.ofSeconds(3)).get(5, TimeUnit.SECONDS);
                return;
            } catch (Exception e) {
                System.out.println("# warm-up call " + (i + 1) + ": " + e);
            }
        }
    }
}
