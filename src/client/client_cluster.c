#include "client_cluster.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "buf.h"
#include "json_field.h"
#include "kube/kube_client.h"

/* The three GETs and the LIST of classes. */
enum client_object { OBJ_SERVICE, OBJ_CONFIG_MAP, OBJ_HOST_KEY, OBJ_CLASSES, OBJ_COUNT };

static const struct kube_resource resource_services = {
	.group = "", .version = "v1", .plural = "services", .kind = "Service", .namespaced = true,
};

struct client_cluster {
	json_t *obj[OBJ_COUNT];
	char *err;   /* the first failure */
	int pending;
	long classes_status; /* the LIST's HTTP status */
	char *warnings;      /* lines, or NULL */
	struct client_facts facts;
	struct client_class_list classes;
	const struct client_cluster_names *names;
};

struct fetch {
	struct client_cluster *cc;
	enum client_object which;
};

static const char *data_str(const json_t *cm, const char *key)
{
	json_t *v = json_object_get(json_object_get(cm, "data"), key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_long(const char *s, long max, long *out)
{
	char *end;
	long v;

	if (!s || !s[0])
		return -1;
	v = strtol(s, &end, 10);
	if (*end || v < 1 || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A ConfigMap key older installs lack: absent is def. */
static int parse_optional_long(const char *s, long max, long def, long *out)
{
	*out = def;
	return s ? parse_long(s, max, out) : 0;
}

/* The address a client outside the cluster reaches the Service at. */
static const char *service_address(const json_t *svc)
{
	json_t *ingress = json_object_get(json_object_get(json_object_get(svc, "status"),
	    "loadBalancer"), "ingress");
	json_t *ext = json_object_get(json_object_get(svc, "spec"), "externalIPs");
	size_t i;
	json_t *v;

	json_array_foreach(ingress, i, v) {
		const char *a = json_field_str(v, "ip");

		if (!a[0])
			a = json_field_str(v, "hostname");
		if (a[0])
			return a;
	}
	if (json_is_string(json_array_get(ext, 0)))
		return json_string_value(json_array_get(ext, 0));
	return NULL;
}

static long service_port(const json_t *svc)
{
	json_t *ports = json_object_get(json_object_get(svc, "spec"), "ports"), *p, *first;
	size_t i;

	first = json_array_get(ports, 0);
	json_array_foreach(ports, i, p) {
		if (strcmp(json_field_str(p, "name"), "ssh") == 0) {
			first = p;
			break;
		}
	}
	p = json_object_get(first, "port");
	return json_is_integer(p) ? (long)json_integer_value(p) : 0;
}

int client_cluster_facts_from(const json_t *service, const json_t *config_map,
    const json_t *host_key_config_map, const struct client_cluster_names *names,
    struct client_facts *f, char **err)
{
	const char *slots, *per_key, *sessions;

	memset(f, 0, sizeof(*f));
	f->address = names->address ? names->address : service_address(service);
	if (!f->address) {
		*err = str_printf("Service %s/%s has no external address yet (no "
		    "status.loadBalancer.ingress, no spec.externalIPs): wait for the load "
		    "balancer, or give the address you reach the proxy at with --address",
		    names->ns, names->service);
		return -1;
	}
	f->port = names->port ? names->port : service_port(service);
	if (f->port < 1 || f->port > 65535) {
		*err = str_printf("Service %s/%s has no port", names->ns, names->service);
		return -1;
	}
	f->host_key = data_str(host_key_config_map, "host-key.pub");
	if (!f->host_key) {
		*err = str_printf("ConfigMap %s/%s has no data \"host-key.pub\"", names->ns,
		    names->host_key_config_map);
		return -1;
	}
	f->user = data_str(config_map, "user");
	f->systems = data_str(config_map, "systems");
	f->features = data_str(config_map, "supported-features");
	slots = data_str(config_map, "builder-slots");
	per_key = data_str(config_map, "builders-per-key");
	sessions = data_str(config_map, "sessions-per-key");
	/* The user and the lists go into builders lines and Nix strings: no
	 * separators or quotes in them. */
	if (!f->user || !f->user[0] || strpbrk(f->user, "@:/ \t\n;\"\\$") || !f->systems ||
	    !f->systems[0] || strpbrk(f->systems, " \t\n;\"\\$") ||
	    parse_long(slots, 1000000, &f->slots) < 0 ||
	    parse_optional_long(per_key, 1000, 1, &f->per_key) < 0 ||
	    parse_optional_long(sessions, 1000000, 16, &f->sessions_per_key) < 0 ||
	    (f->features && strpbrk(f->features, " \t\n;\"\\$"))) {
		*err = str_printf("ConfigMap %s/%s: needs user, systems (comma-separated) and "
		    "builder-slots (a number), optionally supported-features (comma-separated), "
		    "builders-per-key (1..1000) and sessions-per-key (a number)",
		    names->ns, names->config_map);
		return -1;
	}
	return 0;
}

static const char *object_name(const struct client_cluster_names *n, enum client_object w,
    const char **kind)
{
	*kind = w == OBJ_SERVICE ? "Service" : w == OBJ_CLASSES ? "NixBuilderClasses" :
	    "ConfigMap";
	return w == OBJ_SERVICE ? n->service : w == OBJ_CONFIG_MAP ? n->config_map :
	    w == OBJ_CLASSES ? "" : n->host_key_config_map;
}

static char *fetch_error(const struct client_cluster_names *n, enum client_object w,
    const struct kube_response *resp)
{
	const char *kind, *name = object_name(n, w, &kind);

	if (resp->status == 404 && w == OBJ_HOST_KEY)
		return str_printf("ConfigMap %s/%s not found: the operator publishes the proxy's "
		    "public host key there (kubectl -n %s create configmap %s "
		    "--from-file=host-key.pub=nrbc-host-key.pub; see README)", n->ns, name, n->ns,
		    name);
	if (resp->status == 404)
		return str_printf("%s %s/%s not found: is nrbc installed in namespace %s "
		    "(kubectl apply -k manifests)?", kind, n->ns, name, n->ns);
	if (resp->status == 401)
		return str_printf("the API server refused your credentials (401): %s",
		    resp->message);
	if (w == OBJ_CLASSES)
		return str_printf("LIST NixBuilderClasses in %s: %s%s", n->ns,
		    resp->status ? "" : "no answer: ", resp->message);
	if (resp->status == 403)
		return str_printf("not allowed to get %s %s/%s (403): ask for a RoleBinding to "
		    "the Role nrbc-client (manifests/client-role.yaml)", kind, n->ns, name);
	return str_printf("GET %s %s/%s: %s%s", kind, n->ns, name,
	    resp->status ? "" : "no answer: ", resp->message);
}

static void on_get(const struct kube_response *resp, void *data)
{
	struct fetch *f = data;
	struct client_cluster *cc = f->cc;

	cc->pending--;
	if (f->which == OBJ_CLASSES)
		cc->classes_status = resp->status;
	if (f->which == OBJ_CLASSES && (resp->status == 404 || resp->status == 403))
		return; /* an older install: no classes, said in classes_warning() */
	if (resp->status == 200 && json_is_object(resp->body)) {
		cc->obj[f->which] = json_incref(resp->body);
	} else if (!cc->err) {
		cc->err = fetch_error(cc->names, f->which, resp);
	}
}

/* Why an older install has no classes, or NULL. */
static const char *classes_warning(long status)
{
	if (status == 404)
		return "no NixBuilderClasses (404: the CRD is not installed, an older nrbc): "
		       "only the default class\n";
	if (status == 403)
		return "not allowed to list NixBuilderClasses (403: an older Role nrbc-client, see "
		       "manifests/client-role.yaml): only the default class\n";
	return NULL;
}

/* The classes from the LIST, with the ConfigMap's values as defaults. */
static int classes_from(struct client_cluster *cc)
{
	struct client_class_defaults d = { cc->facts.user, cc->facts.slots, cc->facts.per_key };
	const char *w = classes_warning(cc->classes_status);

	if (w ? !(cc->warnings = strdup(w)) :
	    client_class_list_parse(cc->obj[OBJ_CLASSES], &d, &cc->classes, &cc->warnings) < 0) {
		cc->err = strdup("out of memory");
		return -1;
	}
	return 0;
}

struct client_cluster *client_cluster_fetch(struct kube_config *cfg,
    const struct client_cluster_names *names, char **err)
{
	struct client_cluster *cc = calloc(1, sizeof(*cc));
	struct fetch fetches[OBJ_COUNT];
	struct kube_client *kube = NULL;
	uv_loop_t loop;
	bool loop_init = false;

	if (!cc)
		goto nomem;
	cc->names = names;
	if (uv_loop_init(&loop) != 0)
		goto nomem;
	loop_init = true;
	kube = kube_client_create(&loop, cfg);
	if (!kube)
		goto nomem;
	for (int i = 0; i < OBJ_COUNT; i++) {
		const struct kube_resource *r = i == OBJ_SERVICE ? &resource_services :
		    &kube_resource_configmaps;
		const char *kind, *name = object_name(names, (enum client_object)i, &kind);
		uint64_t id;

		fetches[i].cc = cc;
		fetches[i].which = (enum client_object)i;
		/* One more than are used, so the parse sees there are too many. */
		id = i == OBJ_CLASSES ? kube_list(kube, &kube_resource_nixbuilderclasses, names->ns, NULL, NULL,
		    CLIENT_CLASS_MAX + 1, on_get, &fetches[i]) :
		    kube_get(kube, r, names->ns, name, on_get, &fetches[i]);
		if (!id) {
			if (!cc->err)
				cc->err = str_printf("cannot start the request for %s (see the log)",
				    kind);
			continue;
		}
		cc->pending++;
	}
	while (cc->pending > 0 && uv_run(&loop, UV_RUN_ONCE))
		;
	kube_client_destroy(kube);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	if (!cc->err && cc->pending == 0 &&
	    client_cluster_facts_from(cc->obj[OBJ_SERVICE], cc->obj[OBJ_CONFIG_MAP],
	    cc->obj[OBJ_HOST_KEY], names, &cc->facts, &cc->err) == 0 &&
	    classes_from(cc) == 0)
		return cc;
	*err = cc->err ? cc->err : strdup("the API requests did not finish");
	cc->err = NULL;
	client_cluster_destroy(cc);
	return NULL;
nomem:
	if (loop_init)
		uv_loop_close(&loop);
	client_cluster_destroy(cc);
	*err = strdup("out of memory");
	return NULL;
}

void client_cluster_destroy(struct client_cluster *cc)
{
	if (!cc)
		return;
	for (int i = 0; i < OBJ_COUNT; i++)
		json_decref(cc->obj[i]);
	client_class_list_finish(&cc->classes);
	free(cc->warnings);
	free(cc->err);
	free(cc);
}

const struct client_facts *client_cluster_facts(const struct client_cluster *cc)
{
	return &cc->facts;
}

struct client_class_list *client_cluster_classes(struct client_cluster *cc)
{
	return &cc->classes;
}

const char *client_cluster_warnings(const struct client_cluster *cc)
{
	return cc->warnings;
}
