/*
 * Request deadlines on the server side (docs/deadlines.md): the header's pure rules are
 * codec/deadline.h, passing a handler's remaining time on is obs/trace.h; what the
 * server does with a passed deadline (skip, shed) is server/message.c. This header
 * gathers them for the server and the client.
 */
#ifndef KSF_DEADLINE_H
#define KSF_DEADLINE_H

#include "codec/deadline.h"
#include "obs/trace.h"

/* The first word of the error a shed request gets (docs/deadlines.md, "Shedding"),
 * so callers can tell overload from a handler's own errors. */
#define KSFI_OVERLOADED "overloaded"

#endif
