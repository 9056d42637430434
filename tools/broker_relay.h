/*
 * The front door of `ksf broker`: a Kafka-frame relay on 127.0.0.1:PORT in front of
 * librdkafka's mock cluster, for the two things the 2.0.2 mock cannot do itself
 * (choose its port, and auto-create topics with other than 4 partitions). It relays
 * frames both ways, rewrites the broker port in Metadata and FindCoordinator
 * responses so clients reconnect to the front door, and creates every topic named in
 * a Metadata request with the chosen partition count just before the mock sees it.
 * Single-threaded: the command's main thread runs broker_relay_poll() in a loop.
 */
#ifndef KSF_TOOLS_BROKER_RELAY_H
#define KSF_TOOLS_BROKER_RELAY_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stdint.h>

#define TOPIC_NAME_MAX 249 /* Kafka's limit for topic names */
#define FRONT_MAX_CONNS 128

typedef struct front_conn front_conn;

typedef struct front_door {
    int listen_fd;
    uint16_t port;      /* the front door's port, advertised to clients */
    uint16_t mock_port; /* the mock broker's own ephemeral port */
    int partitions;     /* for topics named in Metadata requests */
    rd_kafka_mock_cluster_t *mcluster;
    front_conn *conns[FRONT_MAX_CONNS];
} front_door;

/* Binds 127.0.0.1:@p port (0: any). Returns 0, or 1 after printing why not. */
int broker_relay_listen(front_door *fd, int port);

/* One poll round over @p stop_fd, the listener and every connection. Returns false
 * once @p stop_fd became readable. */
bool broker_relay_poll(front_door *fd, int stop_fd);

/* Closes every connection and the listener. */
void broker_relay_close(front_door *fd);

#endif
