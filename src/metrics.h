/* A small in-process Prometheus registry: counters, gauges and histograms
 * with constant labels, rendered in the text exposition format 0.0.4.
 * Single-threaded: every call happens on the loop thread. */
#ifndef NRBC_METRICS_H
#define NRBC_METRICS_H

#include <stddef.h>

#include "buf.h"

struct metrics;
struct metric;

struct metrics *metrics_create(void);
/* Frees the registry and every metric handed out by it. Accepts NULL. */
void metrics_destroy(struct metrics *m);

/*
 * Register one series, or return the existing one with the same name and
 * labels. labels is NULL or a Prometheus label list without braces, e.g.
 * "outcome=\"ok\",pool=\"x86\"". Series of one name share one HELP/TYPE block
 * (the first help text wins) and must share the type (and, for histograms,
 * the bounds). Returns NULL on an invalid name or labels, on a type or bounds
 * conflict, or when out of memory.
 */
struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
    const char *labels);
struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
    const char *labels);
/* bounds: n finite upper bounds in strictly increasing order; +Inf is implied. */
struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
    const char *labels, const double *bounds, size_t n);

/* Updates ignore a NULL metric, so a failed registration only loses numbers.
 * Counters only go up: negative or NaN additions are ignored. metric_set is
 * for gauges, metric_observe for histograms; other uses are ignored. */
void metric_add(struct metric *mt, double v);
void metric_set(struct metric *mt, double v);
void metric_observe(struct metric *mt, double v);
/* The current value (counter, gauge) or the observation count (histogram). */
double metric_value(const struct metric *mt);

/* Appends the exposition text to out; -1 when out hits its cap. */
int metrics_render(const struct metrics *m, struct buf *out);

/* The Content-Type that goes with metrics_render. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
