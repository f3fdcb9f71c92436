/* The builder classes a client can reach: the default one (the proxy's
 * client user, from the nrbc-client ConfigMap) and each NixBuilderClass,
 * reached by its name as the SSH user. Parsing the class list and picking
 * the classes --classes names are pure functions, so they are unit-tested. */
#ifndef NRBC_CLIENT_CLASS_H
#define NRBC_CLIENT_CLASS_H

#include <jansson.h>
#include <stddef.h>

/* More classes than this are refused (with a warning): each one becomes
 * a builders entry Nix tries in turn. */
#define CLIENT_CLASS_MAX 64

/* One builders entry. Strings are heap, owned by the class; lists are
 * comma-separated, "" when empty. */
struct client_class {
	char *name;       /* the SSH user: "nixbld" for the default class, else the class */
	char *systems;    /* "x86_64-linux,aarch64-linux" */
	char *supported;  /* spec.supportedFeatures as given */
	char *mandatory;  /* spec.mandatoryFeatures */
	long speed_factor;
	long slots;       /* sessions one builder serves */
	long per_key;     /* builders one client key may hold */
};

struct client_class_list {
	struct client_class *items;
	size_t n;
};

/* What a class without its own value gets: the nrbc-client ConfigMap's. */
struct client_class_defaults {
	const char *user;  /* the default class's name; no NixBuilderClass may take it */
	long slots;        /* builder-slots */
	long per_key;      /* builders-per-key */
};

void client_class_list_finish(struct client_class_list *l);

/* Nix's maxJobs for the class: every session its builders can hold. */
long client_class_max_jobs(const struct client_class *c);
/* The sum over the list: the sessions one key may open through it. */
long client_class_list_max_jobs(const struct client_class_list *l);

/* Supported features with the mandatory ones added (Nix only builds a
 * derivation on a machine whose mandatory features it asks for, and then
 * also requires them to be supported). Comma-separated heap string, "" for
 * none; NULL when out of memory. */
char *client_class_features(const struct client_class *c);

/* Pure: the classes of a NixBuilderClassList (NULL or anything but a list
 * object reads as no classes, with a warning). A class whose name is not a
 * DNS label or is the default user, or whose spec is malformed, is skipped;
 * past CLIENT_CLASS_MAX the rest are. Each skip adds a line (ending in
 * "\n") to *warnings (heap, NULL when none). 0, or -1 when out of memory
 * (out and *warnings are then empty). */
int client_class_list_parse(const json_t *list, const struct client_class_defaults *d,
    struct client_class_list *out, char **warnings);

/* Puts the default class first: name d->user, the given systems and
 * supported features, speedFactor 1, d's slots and builders per key.
 * 0, or -1 when out of memory (l unchanged). */
int client_class_list_add_default(struct client_class_list *l,
    const struct client_class_defaults *d, const char *systems, const char *features);

/* Keeps only the classes named in names ("nixbld,big"), in list order.
 * names NULL keeps all. An unknown or empty name is an error: -1 with
 * *err (heap) naming it and the classes there are, l unchanged. */
int client_class_list_select(struct client_class_list *l, const char *names, char **err);

#endif
