package dev.ksf.interop;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * Spring Kafka peers for ksf's interoperability tests. One jar, three modes:
 *
 * <pre>
 *   topics  BROKERS TOPIC...   create the topics (4 partitions) the run needs, then exit
 *   server  BROKERS EVENT_LOG  the @KafkaListener + @SendTo handler matrix (SpringService)
 *   client  BROKERS            ReplyingKafkaTemplate calls to ksf services (SpringClient)
 *   call    BROKERS PATTERN VALUE   one ReplyingKafkaTemplate call; prints the reply value
 * </pre>
 *
 * The server prints "spring service ready" once every listener holds its partitions; the
 * client prints "ok NAME" / "not ok NAME: DETAIL" lines and "N passed, N failed", and
 * exits 0 only when nothing failed.
 */
@SpringBootApplication
public class SpringInterop {

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println(
                    "Usage: ksf-spring-interop topics BROKERS TOPIC... | server BROKERS "
                            + "EVENT_LOG | client BROKERS");
            System.exit(2);
        }
        String mode = args[0];
        String brokers = args[1];
        if (mode.equals("topics")) {
            createTopics(brokers, List.of(args).subList(2, args.length));
            return;
        }
        if (!mode.equals("server") && !mode.equals("client") && !mode.equals("call")) {
            System.err.println("unknown mode " + mode + "; expected topics, server, client or call");
            System.exit(2);
        }
        if (mode.equals("call")) {
            if (args.length != 4) {
                System.err.println("Usage: ksf-spring-interop call BROKERS PATTERN VALUE");
                System.exit(2);
            }
            createTopics(brokers, List.of(SpringClient.REPLIES, SpringClient.REPLIES_GROUP));
        }
        List<String> boot = new ArrayList<>();
        boot.add("--spring.profiles.active=" + (mode.equals("call") ? "client" : mode));
        boot.add("--spring.kafka.bootstrap-servers=" + brokers);
        boot.add("--spring.main.web-application-type=none");
        boot.add("--spring.main.banner-mode=off");
        boot.add("--logging.level.root=WARN");
        // Unique per run, so a shared broker never replays an earlier run's requests.
        boot.add("--interop.run=" + System.currentTimeMillis());
        if (mode.equals("server")) {
            if (args.length != 3) {
                System.err.println("Usage: ksf-spring-interop server BROKERS EVENT_LOG");
                System.exit(2);
            }
            boot.add("--interop.event-log=" + args[2]);
        }
        SpringApplication app = new SpringApplication(SpringInterop.class);
        var ctx = app.run(boot.toArray(new String[0]));
        if (mode.equals("client")) {
            int failed = ctx.getBean(SpringClient.class).runAll();
            System.exit(SpringApplication.exit(ctx, () -> failed == 0 ? 0 : 1));
        }
        if (mode.equals("call")) {
            boolean ok = ctx.getBean(SpringClient.class).callOnce(args[2], args[3]);
            System.exit(SpringApplication.exit(ctx, () -> ok ? 0 : 1));
        }
    }

    /** Create @p topics with 4 partitions (existing ones are fine) and wait for them. */
    static void createTopics(String brokers, List<String> topics) throws Exception {
        // Outside Spring Boot logback logs every client setting at INFO: keep warnings.
        ((ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME))
                .setLevel(ch.qos.logback.classic.Level.WARN);
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers))) {
            List<NewTopic> wanted = new ArrayList<>();
            for (String t : topics) {
                wanted.add(new NewTopic(t, 4, (short) 1));
            }
            var result = admin.createTopics(wanted);
            for (var e : result.values().entrySet()) {
                try {
                    e.getValue().get(30, TimeUnit.SECONDS);
                } catch (ExecutionException x) {
                    if (!(x.getCause() instanceof TopicExistsException)) {
                        throw x;
                    }
                }
            }
            admin.describeTopics(topics).allTopicNames().get(30, TimeUnit.SECONDS);
        }
        System.err.println("topics ready: " + topics.size());
    }
}
