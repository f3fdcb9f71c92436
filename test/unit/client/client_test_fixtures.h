/* What the client-config tests share: a host key, the facts of a proxy,
 * and class lists made as client-config makes them. Include after
 * cmocka.h and jansson.h. */
#ifndef NRBC_CLIENT_TEST_FIXTURES_H
#define NRBC_CLIENT_TEST_FIXTURES_H

#include "client/client_class.h"
#include "client/client_render.h"

#define KEY "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc7x5mFJ8yK0iYkX2R9Qwn1m9yF0u1k2hVQ3y7g9Z2a"

static inline struct client_facts facts(long port)
{
	struct client_facts f = { .address = "203.0.113.7", .port = port,
		.host_key = KEY " nrbc-host\n", .user = "nixbld", .systems = "x86_64-linux",
		.features = "", .slots = 4, .per_key = 1, .sessions_per_key = 16 };

	return f;
}

/* The default class of f alone, as client-config makes it. */
static inline struct client_class_list default_only(const struct client_facts *f)
{
	struct client_class_defaults d = { f->user, f->slots, f->per_key };
	struct client_class_list l = { NULL, 0 };

	assert_int_equal(client_class_list_add_default(&l, &d, f->systems, f->features), 0);
	return l;
}

/* The default class of f and the classes of the JSON list. */
static inline struct client_class_list with_classes(const struct client_facts *f, const char *list)
{
	struct client_class_defaults d = { f->user, f->slots, f->per_key };
	struct client_class_list l;
	json_t *j = json_loads(list, 0, NULL);
	char *warnings = NULL;

	assert_non_null(j);
	assert_int_equal(client_class_list_parse(j, &d, &l, &warnings), 0);
	assert_null(warnings);
	assert_int_equal(client_class_list_add_default(&l, &d, f->systems, f->features), 0);
	json_decref(j);
	return l;
}

#endif
