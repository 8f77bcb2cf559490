/*
 * The foreground run's state machine (src/builder/runtime.c), visible to its unit tests:
 * the states a container passes through under obi_runtime_run, the events that move it, and
 * the one transition function that checks every move against the table. Not installed, not
 * for callers: they see obi_runtime_run only.
 */
#ifndef OCIBUILD_RUNTIME_INTERNAL_H
#define OCIBUILD_RUNTIME_INTERNAL_H

#include "ocibuild/error.h"

typedef enum obi_run_state {
    OBI_RUN_STARTING, /* `run` creates and starts the container (one call: it is the reaper) */
    OBI_RUN_RUNNING,  /* waiting for its exit, its output, the deadline and the cancel fd */
    OBI_RUN_KILLING,  /* `kill ID KILL` sent; waiting (a grace) for the runtime to exit */
    OBI_RUN_DELETING, /* `kill` + `delete --force`, retried: the container must go */
    OBI_RUN_DONE,
    OBI_RUN_N_STATES,
} obi_run_state;

typedef enum obi_run_event {
    OBI_RUN_EV_STARTED,        /* the runtime process was spawned */
    OBI_RUN_EV_SPAWN_FAILED,   /* it was not: no container was made */
    OBI_RUN_EV_EXITED,         /* the runtime exited 0 and its output ended */
    OBI_RUN_EV_EXITED_FAILING, /* it exited non-zero: the container's failure or its own */
    OBI_RUN_EV_RUNTIME_DIED,   /* the runtime was killed by a signal: the container may live */
    OBI_RUN_EV_TIMEOUT,        /* the deadline passed */
    OBI_RUN_EV_CANCEL,         /* the cancel fd became readable */
    OBI_RUN_EV_IO_FAILED,      /* poll or waitpid failed: nothing more can be watched */
    OBI_RUN_EV_ASIDE_FAILED,   /* the caller's work while it starts failed (while_starting) */
    OBI_RUN_EV_RUNTIME_GONE,   /* (killing) the runtime process exited, however */
    OBI_RUN_EV_GRACE_OVER,     /* (killing) it did not, within the grace */
    OBI_RUN_EV_DESTROYED,      /* (deleting) kill + delete --force succeeded */
    OBI_RUN_EV_DESTROY_FAILED, /* (deleting) they did not, after retries */
    OBI_RUN_N_EVENTS,
} obi_run_event;

const char *obi_run_state_name(obi_run_state state);
const char *obi_run_event_name(obi_run_event event);

/* The state event moves from to, per the table in runtime.c. An event the table does not allow
 * there is refused: -EINVAL, with a message naming the container id, the state, the event and
 * the events that state allows. */
int obi_run_transition(const char *id, obi_run_state from, obi_run_event event, obi_run_state *to,
                       obi_error **err);

#endif
