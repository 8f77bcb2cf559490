/*
 * Signals by name or number, as a deployment's stop_signal, an image config's StopSignal and the
 * replica's stop annotation (service_spec.h) spell them: the one parser for all three, so that a
 * signal the deployment may name is one the image may name and the lifecycle reads back.
 */
#ifndef OCIBUILD_SIGNAL_NAME_H
#define OCIBUILD_SIGNAL_NAME_H

/* The signal text names: "SIGTERM", "TERM", "sigterm" (case does not matter, as Docker reads a
 * StopSignal), an alias (IOT, CLD, IO), a real-time signal ("SIGRTMIN+3", "RTMAX-1", "RTMIN"),
 * or a number from 1 to NSIG - 1 ("15"). 0 when text is NULL or none of these. */
int obi_signal_parse(const char *text);

#endif
