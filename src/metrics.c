#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_HISTOGRAM,
};

static const char *const metric_type_names[] = {
	[METRIC_COUNTER] = "counter",
	[METRIC_GAUGE] = "gauge",
	[METRIC_HISTOGRAM] = "histogram",
};

/* One name: the HELP/TYPE block and its series, in registration order. */
struct metric_family {
	struct metric_family *next;
	char *name;
	char *help;
	enum metric_type type;
	double *bounds;
	size_t nbounds;
	struct metric *series;
	struct metric **series_tail;
};

/* One series: a family plus one set of constant labels. */
struct metric {
	struct metric *next;
	struct metric_family *family;
	char *labels; /* "" when there are none */
	double value;
	/* Histograms: nbounds + 1 per-bucket (not cumulative) counts, the last
	 * one for +Inf; cumulated when rendered. */
	uint64_t *buckets;
	double sum;
	uint64_t count;
};

struct metrics {
	struct metric_family *families;
	struct metric_family **tail;
};

/* Enough for the label sets we use; more is probably a mistake. */
#define METRICS_MAX_LABELS 16

struct metrics *metrics_create(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->tail = &m->families;
	return m;
}

static void metric_free(struct metric *mt)
{
	free(mt->labels);
	free(mt->buckets);
	free(mt);
}

static void metric_family_free(struct metric_family *f)
{
	struct metric *mt, *next;

	for (mt = f->series; mt; mt = next) {
		next = mt->next;
		metric_free(mt);
	}
	free(f->name);
	free(f->help);
	free(f->bounds);
	free(f);
}

void metrics_destroy(struct metrics *m)
{
	struct metric_family *f, *next;

	if (!m)
		return;
	for (f = m->families; f; f = next) {
		next = f->next;
		metric_family_free(f);
	}
	free(m);
}

static bool metrics_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool metrics_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool metrics_valid_name(const char *name)
{
	if (!name || !(metrics_is_alpha(name[0]) || name[0] == ':'))
		return false;
	for (const char *p = name + 1; *p; p++) {
		if (!metrics_is_alpha(*p) && !metrics_is_digit(*p) && *p != ':')
			return false;
	}
	return true;
}

/*
 * name="value"(,name="value")*: label names [a-zA-Z_][a-zA-Z0-9_]*, not
 * reserved ("__" prefix, "le" on histograms), no duplicates; values may only
 * use the escapes \\ \" \n and hold no raw newline. Checked up front because
 * a broken label set would make Prometheus reject the whole scrape.
 */
static bool metrics_valid_labels(const char *labels, enum metric_type type)
{
	const char *names[METRICS_MAX_LABELS];
	size_t lens[METRICS_MAX_LABELS];
	size_t count = 0;
	const char *p = labels;

	if (*p == '\0')
		return true;
	for (;;) {
		const char *start = p;
		size_t len;

		if (!metrics_is_alpha(*p))
			return false;
		while (metrics_is_alpha(*p) || metrics_is_digit(*p))
			p++;
		len = (size_t)(p - start);
		if (len >= 2 && start[0] == '_' && start[1] == '_')
			return false;
		if (type == METRIC_HISTOGRAM && len == 2 && memcmp(start, "le", 2) == 0)
			return false;
		if (count == METRICS_MAX_LABELS)
			return false;
		for (size_t i = 0; i < count; i++) {
			if (lens[i] == len && memcmp(names[i], start, len) == 0)
				return false;
		}
		names[count] = start;
		lens[count++] = len;
		if (*p++ != '=' || *p++ != '"')
			return false;
		while (*p != '"') {
			if (*p == '\0' || *p == '\n')
				return false;
			if (*p == '\\') {
				p++;
				if (*p != '\\' && *p != '"' && *p != 'n')
					return false;
			}
			p++;
		}
		p++;
		if (*p == '\0')
			return true;
		if (*p++ != ',')
			return false;
	}
}

static bool metrics_valid_bounds(const double *bounds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
			return false;
	}
	return true;
}

static bool metrics_same_bounds(const struct metric_family *f, const double *bounds, size_t n)
{
	if (f->nbounds != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (f->bounds[i] != bounds[i])
			return false;
	}
	return true;
}

static struct metric_family *metrics_find_family(const struct metrics *m, const char *name)
{
	for (struct metric_family *f = m->families; f; f = f->next) {
		if (strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

static struct metric_family *metric_family_create(enum metric_type type, const char *name,
    const char *help, const double *bounds, size_t n)
{
	struct metric_family *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->type = type;
	f->series_tail = &f->series;
	f->name = strdup(name);
	f->help = strdup(help ? help : "");
	if (!f->name || !f->help)
		goto fail;
	if (n > 0) {
		f->bounds = calloc(n, sizeof(*f->bounds));
		if (!f->bounds)
			goto fail;
		memcpy(f->bounds, bounds, n * sizeof(*bounds));
		f->nbounds = n;
	}
	return f;
fail:
	metric_family_free(f);
	return NULL;
}

static struct metric *metric_create(struct metric_family *f, const char *labels)
{
	struct metric *mt = calloc(1, sizeof(*mt));

	if (!mt)
		return NULL;
	mt->family = f;
	mt->labels = strdup(labels);
	if (!mt->labels)
		goto fail;
	if (f->type == METRIC_HISTOGRAM) {
		mt->buckets = calloc(f->nbounds + 1, sizeof(*mt->buckets));
		if (!mt->buckets)
			goto fail;
	}
	return mt;
fail:
	metric_free(mt);
	return NULL;
}

static struct metric *metrics_register(struct metrics *m, enum metric_type type,
    const char *name, const char *help, const char *labels, const double *bounds, size_t n)
{
	struct metric_family *f;
	struct metric *mt;
	bool new_family = false;

	if (!labels)
		labels = "";
	if (!m || !metrics_valid_name(name) || !metrics_valid_labels(labels, type) ||
	    (n > 0 && !bounds) || !metrics_valid_bounds(bounds, n))
		return NULL;
	f = metrics_find_family(m, name);
	if (f) {
		if (f->type != type || (type == METRIC_HISTOGRAM && !metrics_same_bounds(f, bounds, n)))
			return NULL;
		for (mt = f->series; mt; mt = mt->next) {
			if (strcmp(mt->labels, labels) == 0)
				return mt;
		}
	} else {
		f = metric_family_create(type, name, help, bounds, n);
		if (!f)
			return NULL;
		new_family = true;
	}
	mt = metric_create(f, labels);
	if (!mt) {
		if (new_family)
			metric_family_free(f);
		return NULL;
	}
	*f->series_tail = mt;
	f->series_tail = &mt->next;
	if (new_family) {
		*m->tail = f;
		m->tail = &f->next;
	}
	return mt;
}

struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	return metrics_register(m, METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	return metrics_register(m, METRIC_GAUGE, name, help, labels, NULL, 0);
}

struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
    const char *labels, const double *bounds, size_t n)
{
	return metrics_register(m, METRIC_HISTOGRAM, name, help, labels, bounds, n);
}

void metric_add(struct metric *mt, double v)
{
	if (!mt || isnan(v))
		return;
	if (mt->family->type == METRIC_GAUGE ||
	    (mt->family->type == METRIC_COUNTER && v >= 0))
		mt->value += v;
}

void metric_set(struct metric *mt, double v)
{
	if (mt && mt->family->type == METRIC_GAUGE)
		mt->value = v;
}

void metric_observe(struct metric *mt, double v)
{
	struct metric_family *f;
	size_t i;

	if (!mt || mt->family->type != METRIC_HISTOGRAM || isnan(v))
		return;
	f = mt->family;
	for (i = 0; i < f->nbounds && v > f->bounds[i]; i++)
		;
	mt->buckets[i]++;
	mt->sum += v;
	mt->count++;
}

double metric_value(const struct metric *mt)
{
	if (!mt)
		return 0;
	if (mt->family->type == METRIC_HISTOGRAM)
		return (double)mt->count;
	return mt->value;
}

/* The shortest text that reads back as the same double, so 0.1 is "0.1"
 * and not "0.10000000000000001". */
static void metrics_format_double(double v, char *out, size_t size)
{
	if (isnan(v)) {
		snprintf(out, size, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, size, "%s", v > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* %g alone would turn 10 into "1e+01". */
	if (v > -1e15 && v < 1e15 && (double)(int64_t)v == v) {
		snprintf(out, size, "%" PRId64, (int64_t)v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, size, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

static int metrics_render_help(const struct metric_family *f, struct buf *out)
{
	if (f->help[0] != '\0') {
		if (buf_printf(out, "# HELP %s ", f->name) < 0)
			return -1;
		for (const char *p = f->help; *p; p++) {
			int rc;

			if (*p == '\\')
				rc = buf_append_str(out, "\\\\");
			else if (*p == '\n')
				rc = buf_append_str(out, "\\n");
			else
				rc = buf_append(out, p, 1);
			if (rc < 0)
				return -1;
		}
		if (buf_append_str(out, "\n") < 0)
			return -1;
	}
	return buf_printf(out, "# TYPE %s %s\n", f->name, metric_type_names[f->type]);
}

/* "name{labels} value" with the braces left out when there are no labels. */
static int metrics_render_sample(struct buf *out, const char *name, const char *suffix,
    const char *labels, const char *value)
{
	if (labels[0] == '\0')
		return buf_printf(out, "%s%s %s\n", name, suffix, value);
	return buf_printf(out, "%s%s{%s} %s\n", name, suffix, labels, value);
}

static int metrics_render_histogram(const struct metric *mt, struct buf *out)
{
	const struct metric_family *f = mt->family;
	char num[40];
	uint64_t cumulative = 0;

	for (size_t i = 0; i <= f->nbounds; i++) {
		cumulative += mt->buckets[i];
		if (i < f->nbounds)
			metrics_format_double(f->bounds[i], num, sizeof(num));
		else
			snprintf(num, sizeof(num), "+Inf");
		if (buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name, mt->labels,
		        mt->labels[0] ? "," : "", num, cumulative) < 0)
			return -1;
	}
	metrics_format_double(mt->sum, num, sizeof(num));
	if (metrics_render_sample(out, f->name, "_sum", mt->labels, num) < 0)
		return -1;
	snprintf(num, sizeof(num), "%" PRIu64, mt->count);
	return metrics_render_sample(out, f->name, "_count", mt->labels, num);
}

int metrics_render(const struct metrics *m, struct buf *out)
{
	char num[40];

	for (const struct metric_family *f = m->families; f; f = f->next) {
		if (metrics_render_help(f, out) < 0)
			return -1;
		for (const struct metric *mt = f->series; mt; mt = mt->next) {
			int rc;

			if (f->type == METRIC_HISTOGRAM) {
				rc = metrics_render_histogram(mt, out);
			} else {
				metrics_format_double(mt->value, num, sizeof(num));
				rc = metrics_render_sample(out, f->name, "", mt->labels, num);
			}
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}
